"""Base class of the metric accumulators: local sums, an optional cross-process total, ``compute``."""

from __future__ import annotations

from typing import Any

import numpy as np

from sapiens2.metrics.distributed import all_reduce_sum, world_size


class SumMetric:
    """An accumulator whose whole state is a dict of integer / float64 numpy arrays of sums.

    Subclasses implement ``_empty_state()`` (the zero state), ``update(...)`` (adds to
    ``self._local``) and ``_compute(state)`` (turns a state into the metrics dict).

    ``sync()`` (alias ``all_reduce()``) sums the local state of every rank into a global state that
    ``compute()`` then uses; the local sums are kept, so calling ``sync()`` twice does not double
    count, and a later ``update()`` drops the global state until the next ``sync()``. Integer
    counts reduce exactly; float64 sums reduce up to the rounding of the summation order.
    """

    def __init__(self) -> None:
        self._local: dict[str, np.ndarray] = self._empty_state()
        self._global: dict[str, np.ndarray] | None = None
        self._global_world_size = 1

    # -- subclass hooks ---------------------------------------------------------------------------
    def _empty_state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        raise NotImplementedError

    # -- public API -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything accumulated (local and synced)."""
        self._local = self._empty_state()
        self._global = None
        self._global_world_size = 1

    def sync(self, group: Any = None) -> SumMetric:
        """Sum the local states of all ranks (no-op copy when not distributed). Returns ``self``.

        Every rank of ``group`` must call it (it is a collective).
        """
        self._global = all_reduce_sum(self._local, group)
        self._global_world_size = world_size(group)
        return self

    all_reduce = sync

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The state ``compute()`` uses: the synced total if ``sync()`` ran since the last update."""
        return self._global if self._global is not None else self._local

    def compute(self) -> dict[str, Any]:
        """Metrics from the current state (see the subclass docstring for the keys)."""
        return self._compute(self.state)

    def _touch(self) -> None:
        """Call at the start of ``update``: local sums change, any synced total is stale."""
        self._global = None
        self._global_world_size = 1
