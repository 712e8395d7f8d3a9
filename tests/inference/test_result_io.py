"""``to_json()``, ``plot()`` and ``save()`` of every result type."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sapiens2.inference.results import (
    AlbedoResult,
    NormalResult,
    PointmapResult,
    PoseResult,
    SegResult,
)
from sapiens2.tasks.matting import MattingResult

H, W = 24, 20


def _results():
    rng = np.random.default_rng(0)
    mask = np.zeros((H, W), bool)
    mask[4:20, 5:15] = True
    kp = np.stack([rng.uniform(0, W - 1, (2, 308)), rng.uniform(0, H - 1, (2, 308))], -1)
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    points = np.dstack([rng.normal(size=(H, W, 2)), rng.uniform(1, 3, (H, W))]).astype(np.float32)
    alpha = rng.uniform(0, 1, (H, W)).astype(np.float32)
    return {
        "pose": PoseResult(
            kp.astype(np.float32),
            rng.uniform(0, 1, (2, 308)).astype(np.float32),
            np.array([[0, 0, 10, 10], [2, 2, 19, 23]], np.float32),
            np.ones(2, np.float32),
            (H, W),
        ),
        "seg": SegResult(rng.integers(0, 29, (H, W)).astype(np.uint8)),
        "normal": NormalResult(normals, mask),
        "pointmap": PointmapResult(points, 0.5, mask, (30.0, 30.0)),
        "albedo": AlbedoResult(rng.uniform(0, 1, (H, W, 3)).astype(np.float32), mask),
        "matting": MattingResult(
            alpha, rng.uniform(0, 1, (H, W, 3)).astype(np.float32) * alpha[..., None]
        ),
    }


@pytest.mark.parametrize("task", ["pose", "seg", "normal", "pointmap", "albedo", "matting"])
def test_every_result_saves_json_npy_and_a_picture(task, tmp_path):
    res = _results()[task]
    data = json.loads(res.to_json())
    assert data == res.to_dict() and data["image_size"] == [H, W]
    assert json.loads(res.save(tmp_path / "r.json").read_text()) == data
    np.testing.assert_array_equal(np.load(res.save(tmp_path / "r.npy")), res.to_array())
    picture = res.plot()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[0] == H
    image = np.full((H, W, 3), 90, np.uint8)
    with_image = res.plot(image)
    assert with_image.shape[0] == H and with_image.shape[1] >= W
    saved = cv2.cvtColor(cv2.imread(str(res.save(tmp_path / "r.png", image))), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(saved, with_image)  # PNG is lossless
    with pytest.raises(ValueError, match=r"cannot save a result as 'r\.txt'"):
        res.save(tmp_path / "r.txt")
    with pytest.raises(ValueError, match="image is 5x5"):
        res.plot(np.zeros((5, 5, 3), np.uint8))


def test_what_the_json_holds():
    r = _results()
    pose = r["pose"].to_dict()
    assert pose["num_keypoints"] == 308 and len(pose["instances"]) == 2
    np.testing.assert_allclose(pose["instances"][1]["keypoints"], r["pose"].keypoints[1], atol=1e-3)
    np.testing.assert_array_equal(r["pose"].to_array()[..., 2], r["pose"].scores)
    seg = r["seg"].to_dict()
    assert sum(c["pixels"] for c in seg["classes"]) == H * W
    assert seg["classes"][0]["name"] == "Background"
    pm = r["pointmap"].to_dict()
    assert pm["foreground_pixels"] == 160 and pm["camera"]["scale"] == 0.5
    assert 1 <= pm["depth"]["min"] <= pm["depth"]["median"] <= pm["depth"]["max"] <= 3
    assert r["matting"].to_array().shape == (H, W, 4)
    pose = r["pose"]
    assert pose.plot().any()  # no image: skeletons over black, and nothing below the threshold
    assert (
        not PoseResult(pose.keypoints, pose.scores * 0, pose.boxes, pose.box_scores, (H, W))
        .plot()
        .any()
    )
