"""A model's forward under ``torch.compile``, safe to call from several predicting threads.

Compilation happens on the first call with each new input shape (the batch dimension turns
dynamic after the second size, so a short last batch compiles once more). Those first calls run
one at a time under a lock and log how long they took, compilation included; later calls with a
seen shape run the compiled code directly. Inductor keeps its compiled kernels in an on-disk cache
(``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temporary folder), so a second run of
the same model and shapes compiles much faster.

The compiled model fuses elementwise work such as the bf16 RoPE rotation without rounding every
intermediate to bf16 as eager PyTorch (and the official code) does, so its outputs differ from the
eager ones in the last bits; it is an opt-in speed option, not the reference path.
"""

from __future__ import annotations

import logging
import threading
import time

import torch

logger = logging.getLogger(__name__)


class CompiledForward:
    """Calls ``torch.compile(module)``; first calls per input shape are serialised and timed.

    One instance serves one model on one device and dtype (a :class:`Predictor`'s), so the input
    shape alone tells a new compilation.

    Args:
        module: the model (its ``forward`` takes one tensor).
        backend / mode: passed to ``torch.compile`` (default: inductor, default mode).
    """

    def __init__(
        self, module: torch.nn.Module, *, backend: str = "inductor", mode: str | None = None
    ):
        self._compiled = torch.compile(module, backend=backend, mode=mode)
        self._lock = threading.Lock()
        self.compile_seconds: dict[tuple, float] = {}  # input shape -> its first call's seconds

    def __call__(self, x: torch.Tensor):
        shape = tuple(x.shape)
        if shape in self.compile_seconds:
            return self._compiled(x)
        with self._lock:
            if shape in self.compile_seconds:  # another thread compiled it while we waited
                return self._compiled(x)
            t0 = time.perf_counter()
            out = self._compiled(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            self.compile_seconds[shape] = seconds = time.perf_counter() - t0
            logger.info("torch.compile: first batch of shape %s took %.1f s (compilation included)",
                        shape, seconds)  # fmt: skip
            return out
