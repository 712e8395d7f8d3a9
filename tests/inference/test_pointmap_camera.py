"""Pointmap camera: the intrinsics fitted to a point map and the scale's focal length."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sapiens2.data.geometry import letterbox_params
from sapiens2.inference.results import PointmapResult, fit_intrinsics
from sapiens2.inference.runners import _focal_length


def _points(k: np.ndarray, hw=(30, 40), seed=0) -> np.ndarray:
    """A point map seen by a pinhole camera ``k`` at random depths."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = np.random.default_rng(seed).uniform(1.0, 3.0, (h, w))
    x = (u - k[0, 2]) / k[0, 0] * z
    y = (v - k[1, 2]) / k[1, 1] * z
    return np.stack([x, y, z], -1).astype(np.float32)


def test_fit_recovers_the_camera_and_keeps_a_given_focal_length():
    k = np.array([[55.0, 0, 21.5], [0, 50.0, 13.0], [0, 0, 1]])
    pts = _points(k)
    fit = fit_intrinsics(pts)
    np.testing.assert_allclose(fit.K, k, atol=1e-3)
    assert fit.rms_px < 1e-3 and fit.points == 30 * 40
    fixed = fit_intrinsics(pts, focal=(55.0, 50.0))  # only the principal point is fitted
    np.testing.assert_allclose(fixed.K, k, atol=1e-3)
    wrong = fit_intrinsics(pts, focal=(60.0, 50.0))
    assert wrong.K[0, 0] == 60.0 and wrong.rms_px > 0.1
    mask = np.zeros((30, 40), bool)
    mask[:3, :5] = True  # 15 pixels: too few
    assert fit_intrinsics(pts, mask) is None


def test_camera_json_and_the_focal_length_of_the_scale():
    box = letterbox_params((60, 80), (1024, 768))  # a landscape image in a portrait input
    fx, fy = _focal_length(0.5, box)  # fx = 768 / 0.5 = 1536 network pixels
    assert fx == pytest.approx(1536 / box.factors[0]) and fy == pytest.approx(1536 / box.factors[1])
    assert _focal_length(0.0, box) is None and _focal_length(float("nan"), box) is None
    k = np.array([[fx, 0, 39.5], [0, fy, 29.5], [0, 0, 1]])
    res = PointmapResult(_points(k, (60, 80)), 0.5, None, (fx, fy))
    cam = json.loads(json.dumps(res.camera(), allow_nan=False))
    assert cam["scale"] == 0.5 and cam["image_size"] == [60, 80]
    np.testing.assert_allclose(cam["K"], k, atol=1e-3)
    np.testing.assert_allclose(cam["K_fit"], k, atol=1e-2)
    assert cam["K_rms_px"] < 1e-2 and cam["fit_points"] == 60 * 80
    assert PointmapResult(res.points, 0.5).camera()["K"] is None  # focal length unknown
    nan = PointmapResult(res.points, float("nan")).camera()  # still valid JSON
    assert nan["scale"] is None and json.loads(json.dumps(nan, allow_nan=False)) == nan
