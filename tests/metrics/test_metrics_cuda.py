"""CUDA inputs give the CPU numbers, and sync() works over NCCL (1 rank). Skipped without a GPU."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist

from sapiens2.metrics import (
    AlbedoMetric,
    Keypoints308Metric,
    NormalMetric,
    PointmapMetric,
    SegmentationMetric,
    evaluate_keypoints308,
)

from .test_keypoints308_eval import _gt308, _predictions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(seed: int):
    rng = np.random.default_rng(seed)
    t = torch.from_numpy
    seg_t = rng.integers(0, 6, (2, 64, 48))
    seg_t[rng.uniform(size=seg_t.shape) < 0.1] = 255
    g = rng.normal(size=(2, 3, 64, 48))
    z = 2 + rng.uniform(size=(2, 1, 64, 48))
    pm = np.concatenate([rng.uniform(-1, 1, (2, 2, 64, 48)) * z, z], 1)
    alb = rng.uniform(size=(2, 3, 64, 48))
    mask = rng.uniform(size=(2, 64, 48)) < 0.8
    return {
        "seg": (t(rng.normal(size=(2, 6, 32, 24)).astype(np.float32)), t(seg_t)),
        "normal": (t((g + rng.normal(scale=0.4, size=g.shape)).astype(np.float32)), t(g), t(mask)),
        "pointmap": (
            t((pm * 1.1 + rng.normal(scale=0.03, size=pm.shape)).astype(np.float32)),
            t(pm),
            t(mask),
        ),
        "albedo": (
            t(np.clip(alb + rng.normal(scale=0.1, size=alb.shape), 0, 1).astype(np.float32)),
            t(alb),
            t(mask),
        ),
    }


def _metrics():
    return {
        "seg": SegmentationMetric(num_classes=6),
        "normal": NormalMetric(),
        "pointmap": PointmapMetric(),
        "albedo": AlbedoMetric(),
    }


def _close(a, b, path=""):
    if isinstance(a, dict):
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cuda_inputs_match_cpu_and_nccl_sync():
    cpu, gpu = _metrics(), _metrics()
    for seed in range(2):
        batch = _inputs(seed)
        for name in cpu:
            cpu[name].update(*batch[name])
            gpu[name].update(*(x.cuda() for x in batch[name]))
    expected = {name: m.compute() for name, m in cpu.items()}
    for name, m in gpu.items():
        _close(expected[name], m.compute(), name)
    torch.cuda.set_device(0)
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        for name, m in gpu.items():
            _close(expected[name], m.sync().compute(), f"nccl/{name}")
        gt, rng = _gt308(5)
        preds = _predictions(gt, rng)
        pose = Keypoints308Metric(gt)
        pose.update(preds)
        assert pose.sync().compute() == evaluate_keypoints308(gt, preds)
    finally:
        dist.destroy_process_group()
