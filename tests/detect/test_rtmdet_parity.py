"""Golden parity with mmdet 3.3.0 on the tiny random-weight RTMDet fixture, on any CPU.

The fixture holds mmdet's float32 outputs only. Float32 results depend on the CPU's kernels (the
summation order of the convolutions), and on this random-weight detector ``exp(reg) * stride``
amplifies the last-bit differences: our float32 run is up to 3e-4 of max|ref| (head) and 0.1 px
(boxes) away from the exact answer. mmdet's file carries the same kind of error, made on one CPU,
so a float32-to-file bound that holds on one CPU fails on another (on an AMD EPYC with AVX2 only:
head 1.40e-4 against 1e-4, a box 0.0297 px against 0.0253 px). Hence two checks:

1. **float64 against mmdet's file.** Our float64 run is the exact answer to ~1e-15 on any CPU, so
   its difference to the file is a constant: the file's own float32 rounding error. The bounds are
   that constant times ~1.5; the means (which average the rounding noise down) make the check
   sensitive to small systematic defects.
2. **float32 against our float64 run**, with bounds from measurements under several kernel
   selections (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``, thread
   count) times ~3. Boxes are compared relative to their size (the error scales with
   ``exp(reg) * stride``), scores absolutely.

Measured on an AMD Zen4 (PyTorch 2.13), max|d| / max|ref| (mean in brackets) over the three levels;
boxes: worst |d| / box size over the 640 input's detections and the batched test's 320 ones (px
on the 640 input in brackets), scores: worst |d|. For comparison, float32 against mmdet's file
gave up to 3.0e-4 (image head) and 0.083 px here, 1.40e-4 and 0.0297 px on the AMD EPYC:

| | backbone, neck (sampled) | head, fixture input | head, image | boxes | scores |
|---|---|---|---|---|---|
| 1. float64 vs mmdet (any CPU) | 1.6e-5 (6.9e-7) | 2.2e-5 (1.3e-6) | 3.1e-4 (1.0e-5) | 4.1e-4 (0.104) | 8.5e-6 |
| bound | 2.5e-5 (1e-6) | 3.5e-5 (2e-6) | 4.5e-4 (1.5e-5) | 6e-4 | 1.3e-5 |
| 2. float32 vs float64: native (AVX-512, 2 threads) | 1.8e-5 (6.7e-7) | 2.0e-5 (1.3e-6) | 2.8e-4 (1.0e-5) | 4.2e-4 (0.106) | 9.9e-6 |
| avx2 + MKL AVX2 + oneDNN AVX2 | 1.8e-5 (7.7e-7) | 5.5e-5 (1.4e-6) | 3.3e-4 (8.5e-6) | 4.6e-4 (0.074) | 7.7e-6 |
| default + MKL SSE4_2 + oneDNN SSE41 | 2.1e-5 (7.2e-7) | 2.0e-5 (1.4e-6) | 3.1e-4 (9.4e-6) | 4.4e-4 (0.059) | 9.7e-6 |
| avx2 (ATen only) | 1.8e-5 (6.7e-7) | 2.0e-5 (1.3e-6) | 2.8e-4 (1.0e-5) | 4.2e-4 (0.106) | 9.9e-6 |
| default (ATen only) | 1.3e-5 (6.8e-7) | 1.3e-5 (1.2e-6) | 2.5e-4 (8.9e-6) | 4.4e-4 (0.086) | 1.0e-5 |
| avx512 + oneDNN AVX512_CORE_VNNI (no bf16) | 1.8e-5 (6.7e-7) | 2.0e-5 (1.3e-6) | 2.8e-4 (1.0e-5) | 4.2e-4 (0.106) | 9.9e-6 |
| 1 thread | 1.7e-5 (6.8e-7) | 2.0e-5 (1.3e-6) | 3.1e-4 (9.9e-6) | 4.5e-4 (0.115) | 9.9e-6 |
| ``MKL_CBWR=COMPATIBLE`` | 1.7e-5 (6.7e-7) | 1.6e-5 (1.2e-6) | 2.7e-4 (9.4e-6) | 4.6e-4 (0.115) | 8.8e-6 |
| bound | 6e-5 (3e-6) | 1.5e-4 (5e-6) | 1e-3 (3e-5) | 1.5e-3 | 3e-5 |

The defect test at the end shows that check 1 fails with one weight of the first convolution off
by 1% (the means catch it; the maxima do not).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sapiens2.detect import DetectorTestConfig, RTMDetDetector, filter_person_boxes
from sapiens2.detect.postprocess import decode_image
from sapiens2.detect.preprocess import letterbox, normalize

# (max, mean) relative to max|ref|, per group of maps
FILE_BOUNDS = {"features": (2.5e-5, 1e-6), "raw": (3.5e-5, 2e-6), "image": (4.5e-4, 1.5e-5)}
FP32_BOUNDS = {"features": (6e-5, 3e-6), "raw": (1.5e-4, 5e-6), "image": (1e-3, 3e-5)}
FILE_BOX_RTOL, FILE_SCORE_TOL = 6e-4, 1.3e-5  # check 1: boxes / box size, scores
FP32_BOX_RTOL, FP32_SCORE_TOL = 1.5e-3, 3e-5  # check 2


def _group(key: str) -> str:
    return "features" if key.startswith(("raw.backbone", "raw.neck")) else key.split(".")[0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.double() - b.double()).abs()
    scale = b.double().abs().max()
    return float(d.max() / scale), float(d.mean() / scale)


def _maps(model, golden, *, image: bool = True) -> dict[str, torch.Tensor]:
    """The golden file's keys computed by ``model``: sampled backbone / neck maps and head outputs
    for the fixture's network input (``raw.*``) and for the preprocessed image (``image.*``)."""
    dtype = next(model.parameters()).dtype
    out = {}
    with torch.inference_mode():
        feats = model.backbone(golden["raw.input"].to(dtype))
        neck = model.neck(feats)
        heads = {"raw": model.bbox_head(neck)}
        if image:
            heads["image"] = model(golden["image.input"].to(dtype))
    for level in range(3):
        for name, maps in (("backbone", feats), ("neck", neck)):
            index = golden[f"raw.{name}.{level}.index"].long()
            out[f"raw.{name}.{level}"] = maps[level].reshape(-1)[index]
        for prefix, (cls, reg) in heads.items():
            out[f"{prefix}.cls_score.{level}"] = cls[level]
            out[f"{prefix}.bbox_pred.{level}"] = reg[level]
    return out


def _reference(golden, key: str) -> torch.Tensor:
    return golden[f"{key}.values"] if _group(key) == "features" else golden[key]


def _worst(ours: dict, refs: dict) -> dict[str, tuple[float, float]]:
    worst: dict[str, tuple[float, float]] = {}
    for key, value in ours.items():
        mx, mean = _rel(value, refs[key])
        old = worst.get(_group(key), (0.0, 0.0))
        worst[_group(key)] = (max(old[0], mx), max(old[1], mean))
    return worst


def _within(worst: dict[str, tuple[float, float]], bounds: dict[str, tuple[float, float]]) -> bool:
    return all(mx <= bounds[g][0] and mean <= bounds[g][1] for g, (mx, mean) in worst.items())


@pytest.fixture(scope="module")
def detector64(tiny_detector) -> RTMDetDetector:
    return RTMDetDetector(copy.deepcopy(tiny_detector.model).double())


@pytest.fixture(scope="module")
def maps32(tiny_detector, golden):
    return _maps(tiny_detector.model, golden)


@pytest.fixture(scope="module")
def maps64(detector64, golden):
    return _maps(detector64.model, golden)


@pytest.fixture(scope="module")
def file_refs(golden, maps64):
    return {key: _reference(golden, key) for key in maps64}


def test_float64_maps_match_mmdet(maps64, file_refs):
    worst = _worst(maps64, file_refs)
    assert set(worst) == set(FILE_BOUNDS)
    assert _within(worst, FILE_BOUNDS), worst


def test_float32_maps_match_float64(maps32, maps64):
    assert all(v.dtype == torch.float32 for v in maps32.values())
    worst = _worst(maps32, maps64)
    assert _within(worst, FP32_BOUNDS), worst


def test_map_shapes(maps32, golden):
    for level in range(3):
        assert tuple(maps32[f"raw.cls_score.{level}"].shape) == (1, 1, 80 >> level, 80 >> level)
        assert tuple(maps32[f"raw.bbox_pred.{level}"].shape) == (1, 4, 80 >> level, 80 >> level)
        for key in ("raw.cls_score", "raw.bbox_pred", "image.cls_score", "image.bbox_pred"):
            assert maps32[f"{key}.{level}"].shape == golden[f"{key}.{level}"].shape


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


def match_detections(boxes, scores, ref_boxes, ref_scores, score_tol: float) -> tuple[float, float]:
    """Pairs each detection with an unused reference detection of nearly equal score (neighbouring
    scores can be closer than the rounding, or tied) and the closest box.

    Returns:
        The worst ``|box - ref| / ref box size`` and the worst ``|score - ref|`` of the pairs.
    """
    assert boxes.shape == ref_boxes.shape and scores.shape == ref_scores.shape
    unused = set(range(len(ref_scores)))
    worst_box = worst_score = 0.0
    for box, score in zip(boxes, scores, strict=True):
        cands = [j for j in unused if abs(ref_scores[j] - score) <= score_tol]
        assert cands, f"no reference detection with score near {score}"
        j = min(cands, key=lambda j: np.abs(ref_boxes[j] - box).max())
        size = max(ref_boxes[j][2] - ref_boxes[j][0], ref_boxes[j][3] - ref_boxes[j][1])
        worst_box = max(worst_box, float(np.abs(ref_boxes[j] - box).max() / size))
        worst_score = max(worst_score, float(abs(ref_scores[j] - score)))
        unused.remove(j)
    return worst_box, worst_score


def _decode(maps, meta, tiny_detector):
    return decode_image(
        [maps[f"image.cls_score.{level}"][0] for level in range(3)],
        [maps[f"image.bbox_pred.{level}"][0] for level in range(3)],
        tiny_detector.model.config.strides,
        meta,
        tiny_detector.test_config,
    )


@pytest.fixture(scope="module")
def detections64(maps64, tiny_detector, fixture_rgb):
    _, meta = letterbox(fixture_rgb, tiny_detector.test_config)
    boxes, scores = _decode(maps64, meta, tiny_detector)
    return boxes.numpy(), scores.numpy()


def test_float64_detections_match_mmdet(detections64, golden):
    ref_boxes = golden["image.det_bboxes"].numpy()
    ref_scores = golden["image.det_scores"].numpy()
    box, score = match_detections(*detections64, ref_boxes, ref_scores, FILE_SCORE_TOL)
    assert box <= FILE_BOX_RTOL and score <= FILE_SCORE_TOL, (box, score)


def test_float32_detections_match_float64(fixture_detections, fixture_rgb, detections64):
    boxes, scores = fixture_detections
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert len(boxes) == 100
    assert (np.diff(scores) <= 0).all()
    box, score = match_detections(boxes, scores, *detections64, FP32_SCORE_TOL)
    assert box <= FP32_BOX_RTOL and score <= FP32_SCORE_TOL, (box, score)
    # Boxes are in original-image pixels and not clipped to it (11 reach into the padding).
    h, w = fixture_rgb.shape[:2]
    assert ((boxes[:, 2] > w) | (boxes[:, 3] > h)).sum() == 11


def test_batched_call_matches_single_calls(tiny_detector, fixture_rgb):
    # A 320 input keeps this cheap; batching does not depend on the input size. Batch size changes
    # the conv kernels' summation order: both runs are within the float32 bounds of the exact
    # answer, so within twice those bounds of each other.
    det = RTMDetDetector(tiny_detector.model, DetectorTestConfig(input_size=320))
    small = np.ascontiguousarray(fixture_rgb[100:300, 50:330])  # landscape crop: other scale
    batched = det.detect_batch([fixture_rgb, small, fixture_rgb], batch_size=2)
    singles = [det(img) for img in (fixture_rgb, small)]
    assert len(batched) == 3 and len(batched[1].scores) > 0
    for got, want in zip(batched, [*singles, singles[0]], strict=True):
        box, score = match_detections(got.boxes, got.scores, *want, 2 * FP32_SCORE_TOL)
        assert box <= 2 * FP32_BOX_RTOL and score <= 2 * FP32_SCORE_TOL, (box, score)


def test_detector_runs_a_float64_network(tiny_detector, detector64, fixture_rgb):
    """Inputs are cast to the network's dtype; outputs stay float32 (a 320 input: cheaper)."""
    config = DetectorTestConfig(input_size=320)
    got = RTMDetDetector(detector64.model, config)(fixture_rgb)
    want = RTMDetDetector(tiny_detector.model, config)(fixture_rgb)
    assert got.boxes.dtype == np.float32 and got.scores.dtype == np.float32
    assert len(got.scores) > 0
    box, score = match_detections(want.boxes, want.scores, *got, FP32_SCORE_TOL)
    assert box <= FP32_BOX_RTOL and score <= FP32_SCORE_TOL, (box, score)


# Defects: check 1 must fail on them.


def test_float64_check_fails_with_one_weight_off_by_1_percent(detector64, golden, file_refs):
    model = copy.deepcopy(detector64.model)
    with torch.no_grad():
        model.backbone.stem[0].conv.weight.view(-1)[0] *= 1.01
    worst = _worst(_maps(model, golden, image=False), file_refs)
    assert not _within(worst, FILE_BOUNDS), worst


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
