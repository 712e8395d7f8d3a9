"""coco_keypoint_ap against pycocotools' COCOeval (iouType keypoints) on randomized data."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sapiens2.data.metadata import keypoints308
from sapiens2.metrics import COCO17_SIGMAS, CocoKeypointMetric, coco_keypoint_ap
from sapiens2.metrics.coco_keypoints import METRIC_NAMES

from ._coco_data import pycocotools_stats, random_coco

pytest.importorskip("pycocotools")


def _ours(gt, results, sigmas=None, **kw):
    out = coco_keypoint_ap(gt, results, sigmas, **kw)
    return np.array([out[k] for k in METRIC_NAMES])


@pytest.mark.parametrize("seed", range(8))
def test_coco17_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    # seeds vary: two categories, a ground truth with id 0 (pycocotools quirk), results with bbox
    gt, results = random_coco(
        rng, 17, categories=(1, 3) if seed % 3 == 2 else (1,), id0=seed % 4 == 1
    )
    if seed % 4 == 3:
        for r in results:
            r["bbox"] = [1.0, 2.0, float(rng.uniform(5, 200)), float(rng.uniform(5, 200))]
    gt_copy, res_copy = copy.deepcopy(gt), copy.deepcopy(results)
    ref = pycocotools_stats(gt, results, COCO17_SIGMAS)
    ours = _ours(gt, results)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    assert gt == gt_copy and results == res_copy  # inputs untouched
    assert ref[0] > 0.05 and ref[5] > 0.1  # the data is not degenerate


def test_custom_sigmas_and_keypoint_count_match_pycocotools():
    rng = np.random.default_rng(42)
    sigmas = rng.uniform(0.02, 0.1, 9)
    gt, results = random_coco(rng, 9, num_images=10)
    np.testing.assert_allclose(
        _ours(gt, results, sigmas), pycocotools_stats(gt, results, sigmas), atol=1e-9, rtol=0
    )


@pytest.mark.parametrize("seed", range(2))
def test_308_keypoints_match_pycocotools(seed):
    sigmas = keypoints308().sigmas
    rng = np.random.default_rng(100 + seed)
    gt, results = random_coco(rng, 308, num_images=6, noise=(0.0005, 0.03))
    for ann in gt["annotations"]:
        ann["goliath_wholebody_kpts"] = ann.pop("keypoints")
    ref_gt = copy.deepcopy(gt)
    for ann in ref_gt["annotations"]:
        ann["keypoints"] = ann.pop("goliath_wholebody_kpts")
    ref = pycocotools_stats(ref_gt, results, sigmas)
    res = [{**r, "goliath_wholebody_kpts": r.pop("keypoints")} for r in copy.deepcopy(results)]
    ours = _ours(gt, res, sigmas, kpt_key="goliath_wholebody_kpts")
    np.testing.assert_allclose(ours, ref, atol=1e-9, rtol=0)
    assert ref[0] > 0.05


def test_perfect_predictions_give_ap_one():
    rng = np.random.default_rng(3)
    gt, _ = random_coco(rng, 17, num_images=5)
    # drop "num_keypoints > 0 but nothing labelled" ground truths (no exact prediction exists)
    gt["annotations"] = [
        a
        for a in gt["annotations"]
        if (a["num_keypoints"] > 0) == bool(np.count_nonzero(np.asarray(a["keypoints"])[2::3]))
    ]
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 0.9}
        for a in gt["annotations"]
        if not a["iscrowd"] and a["num_keypoints"] > 0
    ]
    out = coco_keypoint_ap(gt, results)
    assert out["AP"] == pytest.approx(1.0) and out["AR"] == pytest.approx(1.0)


def test_no_results_and_no_ground_truth():
    rng = np.random.default_rng(5)
    gt, _ = random_coco(rng, 17, num_images=4)
    out = coco_keypoint_ap(gt, [])
    assert out["AP"] == 0.0 and out["AR"] == 0.0
    empty_gt = {**gt, "annotations": []}
    assert coco_keypoint_ap(empty_gt, [])["AP"] == -1.0


def test_bad_input_is_reported():
    rng = np.random.default_rng(6)
    gt, results = random_coco(rng, 17, num_images=4)
    with pytest.raises(ValueError, match="51"):
        coco_keypoint_ap(gt, results, sigmas=np.full(5, 0.05))
    bad = copy.deepcopy(results)
    bad[0]["image_id"] = 123456
    with pytest.raises(ValueError, match="image_id 123456"):
        coco_keypoint_ap(gt, bad)
    bad = copy.deepcopy(results)
    del bad[0]["score"]
    with pytest.raises(ValueError, match="'score'"):
        coco_keypoint_ap(gt, bad)
    bad_gt = copy.deepcopy(gt)
    del bad_gt["annotations"][0]["num_keypoints"]
    with pytest.raises(ValueError, match="num_keypoints"):
        coco_keypoint_ap(bad_gt, results)


def test_accumulator_equals_function():
    rng = np.random.default_rng(7)
    gt, results = random_coco(rng, 17, num_images=6)
    metric = CocoKeypointMetric(gt)
    metric.update(results[:10])
    metric.update(results[10:])
    assert metric.sync().compute() == coco_keypoint_ap(gt, results)
    metric.reset()
    assert metric.compute()["AP"] == 0.0
