"""Whole-body 308 evaluation: rescoring, OKS-NMS and the per-group tables against pycocotools."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sapiens2.data.metadata import keypoints308
from sapiens2.metrics import (
    Keypoints308Metric,
    evaluate_keypoints308,
    oks_nms,
    rescore,
    score_and_nms,
    to_results_json,
)
from sapiens2.metrics.coco_keypoints import METRIC_NAMES
from sapiens2.metrics.keypoints308 import pck_by_annotation

from ._coco_data import pycocotools_stats, random_coco

META = keypoints308()


def test_rescore_official_rule():
    ks = np.array([[0.1, 0.3, 0.5, 0.2], [0.1, 0.2, 0.0, 0.05]])
    np.testing.assert_allclose(rescore(ks, np.array([0.5, 0.9])), [0.5 * 0.4, 0.0])


def _naive_oks_nms(kps, scores, areas, sigmas, thr):
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    var = (2 * sigmas) ** 2
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            d2 = np.sum((kps[i] - kps[j]) ** 2, axis=1)
            oks = np.mean(np.exp(-d2 / var / ((areas[i] + areas[j]) / 2 + np.spacing(1)) / 2))
            if oks <= thr:
                rest.append(j)
        order = rest
    return keep


def test_oks_nms_matches_naive_loop():
    rng = np.random.default_rng(0)
    sig = META.sigmas
    base = rng.uniform(0, 300, (4, 308, 2))
    kps = np.concatenate(
        [
            base[i % 4] + rng.normal(0, rng.choice([0.05, 0.5, 5.0]), (308, 2))[None]
            for i in range(14)
        ]
    )
    scores = rng.uniform(size=14)
    areas = (kps[..., 0].max(1) - kps[..., 0].min(1)) * (kps[..., 1].max(1) - kps[..., 1].min(1))
    for thr in (0.5, 0.9):
        keep = oks_nms(kps, scores, areas, sig, thr)
        assert list(keep) == _naive_oks_nms(kps, scores, areas, sig, thr)
    assert 4 <= len(oks_nms(kps, scores, areas, sig, 0.9)) < 14


def _predictions(gt, rng):
    """Top-down predictions: 1-3 noisy copies per ground truth (duplicates for the NMS), same ids twice."""
    preds = []
    pid = 0
    for ann in gt["annotations"]:
        kp = np.asarray(ann["goliath_wholebody_kpts"]).reshape(308, 3)
        x, y, w, h = ann["bbox"]
        centre = np.array([x + w / 2, y + h / 2])
        xy = np.where(kp[:, 2:] > 0, kp[:, :2], centre)
        for _ in range(int(rng.integers(1, 4))):
            noise = rng.choice([0.001, 0.01, 0.05]) * np.sqrt(w * h)
            scores = rng.uniform(0, 1, 308)
            pred = {
                "image_id": ann["image_id"],
                "keypoints": xy + rng.normal(0, noise, (308, 2)),
                "keypoint_scores": scores,
                "bbox_score": float(rng.uniform(0.3, 1)),
                "id": pid,
            }
            preds.append(pred)
            if rng.uniform() < 0.2:
                preds.append({**pred, "keypoints": pred["keypoints"] + 50})  # duplicate id: dropped
            pid += 1
    return preds


def _gt308(seed):
    rng = np.random.default_rng(seed)
    gt, _ = random_coco(rng, 308, num_images=5, noise=(0.001, 0.01))
    for ann in gt["annotations"]:
        ann["goliath_wholebody_kpts"] = ann.pop("keypoints")
    return gt, rng


def test_groups_match_pycocotools_on_the_official_results():
    pytest.importorskip("pycocotools")
    gt, rng = _gt308(11)
    preds = _predictions(gt, rng)
    out = evaluate_keypoints308(gt, preds)
    instances = score_and_nms(preds)
    assert out["num_instances"] == len(instances) < len(preds)
    records = to_results_json(instances)
    body = list(META.groups["body"])
    for group in ("body", "foot", "face", "left_hand", "right_hand", "wholebody"):
        idx = list(range(308)) if group == "wholebody" else list(META.groups[group])
        ref_gt = copy.deepcopy(gt)
        for ann in ref_gt["annotations"]:
            ann["keypoints"] = (
                np.asarray(ann.pop("goliath_wholebody_kpts")).reshape(308, 3)[idx].ravel().tolist()
            )
        ref_res = []
        for inst, rec in zip(instances, records, strict=True):
            field = "goliath_wholebody_kpts" if group == "wholebody" else {
                "body": "keypoints", "foot": "foot_kpts", "face": "face_kpts",
                "left_hand": "lefthand_kpts", "right_hand": "righthand_kpts",
            }[group]  # fmt: skip
            bx = inst["keypoints"][body]
            x0, y0 = bx.min(0)
            w, h = bx.max(0) - bx.min(0)
            # detection area = body-17 extent (xtcocotools loadRes); pycocotools takes it from a bbox
            ref_res.append(
                {
                    "image_id": rec["image_id"],
                    "category_id": 1,
                    "keypoints": rec[field],
                    "score": rec["score"],
                    "bbox": [x0, y0, w, h],
                }
            )
        ref = pycocotools_stats(ref_gt, ref_res, META.sigmas[idx])
        ours = np.array([out["groups"][group][k] for k in METRIC_NAMES])
        np.testing.assert_allclose(ours, ref, atol=1e-9, rtol=0, err_msg=group)
    assert out["AP"] == out["groups"]["wholebody"]["AP"] > 0.05


def test_nms_off_and_accumulator():
    gt, rng = _gt308(12)
    preds = _predictions(gt, rng)
    metric = Keypoints308Metric(gt)
    metric.update(preds[: len(preds) // 2])
    metric.update(preds[len(preds) // 2 :])
    assert metric.sync().compute() == evaluate_keypoints308(gt, preds)
    no_nms = evaluate_keypoints308(gt, preds, nms_thr=None)
    unique_ids = len({(p["image_id"], p["id"]) for p in preds})
    assert no_nms["num_instances"] == unique_ids


def test_bad_prediction_reported():
    gt, rng = _gt308(13)
    preds = _predictions(gt, rng)
    preds[1] = {**preds[1], "keypoints": np.zeros((17, 2))}
    with pytest.raises(ValueError, match=r"prediction #1: 'keypoints' has shape \(17, 2\)"):
        evaluate_keypoints308(gt, preds)


def test_pck_by_annotation():
    """Exact keypoints: PCK 1; every keypoint 0.2 x the box side away: 0; half of them: 0.5."""
    gt, _ = _gt308(14)
    exact, far, half = [], [], []
    for ann in gt["annotations"]:
        kp = np.asarray(ann["goliath_wholebody_kpts"], dtype=np.float64).reshape(308, 3)[:, :2]
        side = max(ann["bbox"][2], ann["bbox"][3])
        shifted = kp + np.array([0.2 * side, 0.0])
        mixed = np.where((np.arange(308) % 2 == 0)[:, None], kp, shifted)
        for out, k in ((exact, kp), (far, shifted), (half, mixed)):
            out.append({"image_id": ann["image_id"], "id": ann["id"], "keypoints": k,
                        "keypoint_scores": np.ones(308)})  # fmt: skip
    assert pck_by_annotation(gt, exact) == {"PCK@0.1": 1.0, "PCK@0.1 body": 1.0}
    assert pck_by_annotation(gt, far) == {"PCK@0.1": 0.0, "PCK@0.1 body": 0.0}
    assert 0.4 < pck_by_annotation(gt, half)["PCK@0.1"] < 0.6
    metric = Keypoints308Metric(gt, pck=True)
    metric.update(exact)
    assert metric.compute()["PCK@0.1"] == 1.0 and "PCK@0.1" not in evaluate_keypoints308(gt, exact)
