"""Starting, joining and leaving a Ray cluster: the one session helper of the Ray Data paths
(``sapiens2 curate`` and ``sapiens2 predict --engine ray``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def ray_session(
    address: str | None, num_cpus: int, object_store_memory: int | None = None
) -> Iterator[None]:
    """Connect to the cluster at ``address``, or start a local Ray with ``num_cpus`` CPUs (and
    ``object_store_memory`` bytes of object store, Ray's default when None). A session started here
    is shut down on exit; one already initialised is reused and left running. Ray Data's own
    progress bars and start-up messages are turned off (the callers show their own progress)."""
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            if object_store_memory is not None:
                kwargs["object_store_memory"] = object_store_memory
            ray.init(num_cpus=num_cpus, **kwargs)
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()
