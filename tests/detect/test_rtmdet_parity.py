"""Golden parity with mmdet 3.3.0 on the tiny random-weight RTMDet fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sapiens2.detect import DetectorTestConfig, RTMDetDetector, filter_person_boxes
from sapiens2.detect.preprocess import letterbox, normalize


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def raw_outputs(tiny_detector, golden):
    m = tiny_detector.model
    with torch.inference_mode():
        feats = m.backbone(golden["raw.input"])
        neck = m.neck(feats)
        cls, reg = m.bbox_head(neck)
    return feats, neck, cls, reg


@pytest.mark.parametrize("level", [0, 1, 2])
def test_backbone_neck_head_match_mmdet(raw_outputs, golden, level):
    feats, neck, cls, reg = raw_outputs
    # Backbone and neck maps are stored as 16384 sampled elements per level (fixed flat indices).
    for name, ours in (("backbone", feats), ("neck", neck)):
        index = golden[f"raw.{name}.{level}.index"].long()
        ref = golden[f"raw.{name}.{level}.values"]
        sampled = ours[level].reshape(-1)[index]
        assert _rel(sampled, ref) < 1e-4, (name, level, _rel(sampled, ref))
    assert tuple(feats[level].shape) == ((1, 96, 80, 80), (1, 192, 40, 40), (1, 384, 20, 20))[level]
    assert tuple(neck[level].shape) == (1, 96, 80 >> level, 80 >> level)
    # Head outputs are stored whole.
    for name, ours in (("cls_score", cls), ("bbox_pred", reg)):
        ref = golden[f"raw.{name}.{level}"]
        assert ours[level].shape == ref.shape, name
        assert _rel(ours[level], ref) < 1e-4, (name, level, _rel(ours[level], ref))


def test_preprocessing_reproduces_mmdet_input(tiny_detector, fixture_rgb, golden, rtmdet_files):
    padded, meta = letterbox(fixture_rgb, tiny_detector.test_config)
    x = normalize(torch.from_numpy(padded[None]), tiny_detector.test_config)
    assert torch.equal(x, golden["image.input"])
    image_meta = json.loads(rtmdet_files["json"].read_text())["io"]["image_meta"]
    assert list(meta.ori_shape) == image_meta["ori_shape"]
    assert meta.scale_factor == tuple(image_meta["scale_factor"])
    # Padding is bottom/right with 114, the resized image keeps the aspect ratio.
    assert meta.resized_shape == (640, 482)
    assert (padded[:, 482:] == 114).all()


def test_image_head_outputs_match_mmdet(tiny_detector, fixture_rgb, golden):
    padded, _ = letterbox(fixture_rgb, tiny_detector.test_config)
    x = normalize(torch.from_numpy(padded[None]), tiny_detector.test_config)
    with torch.inference_mode():
        cls, reg = tiny_detector.model(x)
    for level in range(3):
        assert _rel(cls[level], golden[f"image.cls_score.{level}"]) < 1e-4
        assert _rel(reg[level], golden[f"image.bbox_pred.{level}"]) < 1e-4


def assert_same_detections(
    boxes, scores, ref_boxes, ref_scores, score_tol=1e-5, box_tol=1e-2, box_rtol=1e-4
):
    """Same count; each detection matched to an unused reference detection of nearly equal score
    (neighbouring scores can be ~2e-5 apart or tied) with the closest box. Boxes agree within
    ``max(box_tol, box_rtol * box size)`` px: exp(reg) * stride turns float32 rounding differences
    between conv kernels (thread count, CPU) into up to ~6e-5 of the box size (0.015 px on a 250 px
    box of this random-weight fixture with 1 thread; 0.0 with 2 to 4 threads here)."""
    assert boxes.shape == ref_boxes.shape and scores.shape == ref_scores.shape
    unused = set(range(len(ref_scores)))
    for box, score in zip(boxes, scores, strict=True):
        cands = [j for j in unused if abs(ref_scores[j] - score) <= max(score_tol, 3e-5)]
        assert cands, f"no reference detection with score near {score}"
        j = min(cands, key=lambda j: np.abs(ref_boxes[j] - box).max())
        assert abs(ref_scores[j] - score) <= score_tol
        size = max(ref_boxes[j][2] - ref_boxes[j][0], ref_boxes[j][3] - ref_boxes[j][1])
        assert np.abs(ref_boxes[j] - box).max() <= max(box_tol, box_rtol * size), (
            box,
            ref_boxes[j],
        )
        unused.remove(j)


def test_final_detections_match_mmdet(tiny_detector, fixture_rgb, golden):
    boxes, scores = tiny_detector(fixture_rgb)
    ref_boxes = golden["image.det_bboxes"].numpy()
    ref_scores = golden["image.det_scores"].numpy()
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert len(boxes) == 100
    assert (np.diff(scores) <= 0).all()
    assert_same_detections(boxes, scores, ref_boxes, ref_scores)
    # Boxes are in original-image pixels and not clipped to it (11 reach into the padding).
    h, w = fixture_rgb.shape[:2]
    assert ((boxes[:, 2] > w) | (boxes[:, 3] > h)).sum() == 11


def test_batched_call_equals_single_calls(tiny_detector, fixture_rgb):
    # A 320 input keeps this cheap; batching does not depend on the input size.
    det = RTMDetDetector(tiny_detector.model, DetectorTestConfig(input_size=320))
    small = np.ascontiguousarray(fixture_rgb[100:300, 50:330])  # landscape crop: other scale
    batched = det.detect_batch([fixture_rgb, small, fixture_rgb], batch_size=2)
    singles = [det(img) for img in (fixture_rgb, small)]
    assert len(batched) == 3 and len(batched[1].scores) > 0
    # Batch size changes the conv kernels' summation order: equal up to float rounding (seen:
    # 1.1e-4 of the box size).
    for got, want in zip(batched, [*singles, singles[0]], strict=True):
        assert_same_detections(got.boxes, got.scores, want.boxes, want.scores, box_rtol=5e-4)


def test_bad_images_are_rejected(tiny_detector, fixture_rgb):
    with pytest.raises(ValueError, match="uint8"):
        tiny_detector(fixture_rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tiny_detector(fixture_rgb[:, :, 0])
    with pytest.raises(ValueError, match="too elongated"):
        tiny_detector(np.zeros((2000, 1, 3), np.uint8))


def test_no_detection_gives_empty_arrays_and_the_fallback(tiny_detector, fixture_rgb):
    det = RTMDetDetector(tiny_detector.model, DetectorTestConfig(input_size=320, score_thr=1.0))
    boxes, scores = det(fixture_rgb)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    persons = filter_person_boxes(boxes, scores, fixture_rgb.shape[:2])
    assert persons.is_fallback
    np.testing.assert_array_equal(persons.boxes, [[0, 0, 360, 478]])
