"""Two gloo processes, each updating on half of the data, agree with one process after sync()."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sapiens2.metrics import (
    AlbedoMetric,
    Keypoints308Metric,
    MattingMetric,
    NormalMetric,
    PointmapMetric,
    SegmentationMetric,
)

NUM_BATCHES = 4


def _data():
    """Deterministic batches for every metric (identical in every process)."""
    from .test_keypoints308_eval import _gt308, _predictions

    rng = np.random.default_rng(123)
    batches = []
    for _ in range(NUM_BATCHES):
        seg_t = rng.integers(0, 5, (2, 10, 8))
        seg_t[rng.uniform(size=seg_t.shape) < 0.1] = 255
        g = rng.normal(size=(2, 3, 10, 8))
        z = 2 + rng.uniform(size=(2, 1, 10, 8))
        pm = np.concatenate([rng.uniform(-1, 1, (2, 2, 10, 8)) * z, z], 1)
        alb = rng.uniform(size=(2, 3, 10, 8))
        mask = rng.uniform(size=(2, 10, 8)) < 0.8
        alpha = np.clip(rng.normal(0.5, 0.6, (2, 10, 8)), 0, 1)
        trimap = rng.choice(np.array([0, 128, 255], np.uint8), (2, 10, 8))
        batches.append(
            {
                "seg": (rng.normal(size=(2, 5, 10, 8)), seg_t),
                "normal": (g + rng.normal(scale=0.4, size=g.shape), g, mask),
                "pointmap": (pm * 1.1 + rng.normal(scale=0.03, size=pm.shape), pm, mask),
                "albedo": (np.clip(alb + rng.normal(scale=0.1, size=alb.shape), 0, 1), alb, mask),
                "matting": (np.clip(alpha + rng.normal(0, 0.2, alpha.shape), 0, 1), alpha, trimap),
            }
        )
    gt, krng = _gt308(21)
    preds = _predictions(gt, krng)
    return batches, gt, preds


def _run(batches, gt, preds, rank: int, world: int) -> dict:
    metrics = {
        "seg": SegmentationMetric(num_classes=5),
        "normal": NormalMetric(),
        "pointmap": PointmapMetric(),
        "albedo": AlbedoMetric(),
        "matting": MattingMetric(),
    }
    for batch in batches[rank::world]:
        for name, metric in metrics.items():
            metric.update(*batch[name])
    pose = Keypoints308Metric(gt)
    # contiguous blocks: the gathered list is then in the single-process order, which matters only
    # for which of two *different* predictions sharing an id is kept (the data has such pairs)
    block = -(-len(preds) // world)
    pose.update(preds[rank * block : (rank + 1) * block])
    out = {}
    for name, metric in [*metrics.items(), ("pose", pose)]:
        metric.sync()
        metric.sync()  # idempotent: the local sums are kept
        out[name] = metric.compute()
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        batches, gt, preds = _data()
        result = _run(batches, gt, preds, rank, world)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _assert_close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    elif path.endswith(
        "normal/median"
    ):  # exact median (1 process) vs 0.001° histogram (2 processes)
        assert abs(a - b) <= 1e-3, path
    else:
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12), path


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    batches, gt, preds = _data()
    single = _run(batches, gt, preds, 0, 1)
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    for rank in range(world):
        with open(tmp_path / f"rank{rank}.json") as f:
            multi = json.load(f)
        _assert_close(json.loads(json.dumps(single)), multi)
    assert single["seg"]["num_pixels"] > 0 and single["pose"]["AP"] > 0


def test_sync_is_a_no_op_without_process_group():
    assert not dist.is_initialized()
    metric = SegmentationMetric(num_classes=3)
    metric.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]))
    before = metric.compute()
    assert metric.sync().compute() == before
    metric.update(torch.tensor([[0]]), torch.tensor([[0]]))  # an update after sync counts
    assert metric.compute()["num_pixels"] == 4
    metric.reset()
    assert metric.compute()["num_pixels"] == 0
