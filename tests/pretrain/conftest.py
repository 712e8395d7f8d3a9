"""Pretraining tests run single-threaded: the tiny models are latency-bound, and on a shared
2-core machine one thread is several times faster than two."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
