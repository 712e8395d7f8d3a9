"""Pose targets and crops against the official code (regression tests).

``tests/fixtures/official/targets.{safetensors,json}`` were made by the official code (seed 3):
``UDPHeatmap(input_size=(768, 1024), heatmap_size=(192, 256), sigma=6)`` encoding 24 keypoints
(in, on and outside the crop border, one invisible) and decoding noisy heatmaps; and
``bbox_xyxy2cs(box, padding=1.25)`` + ``PoseTopdownAffine(input_size=(768, 1024), use_udp=True)`` on
a 640×480 image with 308 keypoints at rotation 0 and 30 degrees (out-of-crop keypoints set to 0 and
invisible).

Tolerances: heatmaps 1e-5 absolute (float32 ``exp``: measured 1.8e-6); keypoints 1e-3 px (the
official ``cv2.transform`` works in float32: measured 6e-5 / 9e-5 px; decoding 1e-6 px); the crops
may differ by interpolation rounding: at most 1 grey level on at most 1% of the values (measured:
max 1 level on 0.13% (0°) and 0.17% (30°) of the values, cubic interpolation, on an AMD EPYC CPU).

The crop test caught one difference: a keypoint that lands at y = 1023.7 in the 1024-row crop is
inside for the official transform (``0 <= y < H``) but was made invisible by ours (``y <= H - 1``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from sapiens2.data.transforms import (
    GenerateUDPHeatmaps,
    Sample,
    TopdownAffine,
    TopdownBoxFromBBox,
)
from sapiens2.data.udp import udp_encode
from sapiens2.inference.heatmap import decode_udp, decode_udp_torch
from sapiens2.inference.topdown import crop_people

FIXTURES = Path(__file__).parents[1] / "fixtures" / "official"
INPUT_HW = (1024, 768)
HEATMAP_HW = (256, 192)


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    meta = json.loads((FIXTURES / "targets.json").read_text())
    assert "UDPHeatmap" in meta["udp"] and "PoseTopdownAffine" in meta["affine"]
    return load_file(FIXTURES / "targets.safetensors")


def _assert_crop_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert int(diff.max()) <= 1, int(diff.max())
    assert float((diff > 0).mean()) <= 0.01, float((diff > 0).mean())


def test_udp_encode_matches_official(official):
    kp, vis = official["udp.keypoints"][0], official["udp.keypoints_visible"][0]
    heatmaps, weights = udp_encode(kp, vis, INPUT_HW, HEATMAP_HW, sigma=6.0)
    np.testing.assert_allclose(heatmaps, official["udp.heatmaps"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(weights, official["udp.keypoint_weights"][0])
    assert (weights == 0).any() and (weights == 1).any()
    # the same through the training transform
    sample = Sample(
        image=np.zeros((*INPUT_HW, 3), np.uint8),
        keypoints=kp.astype(np.float64),
        keypoints_visible=vis,
    )
    out = GenerateUDPHeatmaps(INPUT_HW, HEATMAP_HW, sigma=6.0)(sample)
    np.testing.assert_array_equal(out.heatmaps, heatmaps)
    np.testing.assert_array_equal(out.keypoint_weights, weights)


def test_udp_decode_matches_official(official):
    noisy = official["udp.noisy_heatmaps"][None]
    ref_kp, ref_scores = official["udp.decoded_keypoints"], official["udp.decoded_scores"]
    kp, scores = decode_udp(noisy, (INPUT_HW[1], INPUT_HW[0]))
    np.testing.assert_allclose(kp, ref_kp, rtol=0, atol=1e-3)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
    kp_t, scores_t = decode_udp_torch(torch.from_numpy(noisy), (INPUT_HW[1], INPUT_HW[0]))
    np.testing.assert_allclose(kp_t, ref_kp, rtol=0, atol=1e-3)
    np.testing.assert_allclose(scores_t, ref_scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rotation", [0, 30])
def test_topdown_affine_matches_official(official, rotation):
    image = official["affine.image"]
    box = official["affine.box_xyxy"][0].astype(np.float64)
    sample = Sample(
        image=image,
        keypoints=official["affine.keypoints"][0].astype(np.float64),
        keypoints_visible=np.ones(308, np.float32),
        bbox=box,
        rotation=float(rotation),
    )
    sample = TopdownBoxFromBBox(padding=1.25)(sample)
    np.testing.assert_allclose(sample.center, official["affine.bbox_center"][0], rtol=1e-6)
    out = TopdownAffine(INPUT_HW)(sample)
    ref = f"affine{rotation}"
    np.testing.assert_allclose(out.scale, official[f"{ref}.bbox_scale"][0], rtol=1e-6)
    _assert_crop_close(out.image, official[f"{ref}.crop"])
    # keypoints outside the crop: invisible with coordinates 0, as the official transform
    ref_vis = official[f"{ref}.keypoints_visible"][0]
    np.testing.assert_array_equal(out.keypoints_visible, ref_vis)
    assert (ref_vis == 0).sum() == {0: 1, 30: 40}[rotation]
    np.testing.assert_allclose(out.keypoints, official[f"{ref}.keypoints"][0], rtol=0, atol=1e-3)
    if rotation == 0:  # inference crops the same way
        crops, center, scale = crop_people(image, box[None], INPUT_HW)
        np.testing.assert_array_equal(crops[0], out.image)
        np.testing.assert_allclose(center[0], official["affine.bbox_center"][0], rtol=1e-6)
        np.testing.assert_allclose(scale[0], official[f"{ref}.bbox_scale"][0], rtol=1e-6)
