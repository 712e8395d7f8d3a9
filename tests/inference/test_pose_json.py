"""``predictions.json``: keypoints outside the image are kept as predicted and flagged."""

from __future__ import annotations

import json

import numpy as np

from sapiens2.inference.export import pose_frame_record, pose_predictions_json
from sapiens2.inference.results import PoseResult, keypoints_in_image


def _result(points: dict[int, tuple[float, float]]) -> PoseResult:
    kp = np.full((1, 308, 2), 100.0, np.float32)
    for k, xy in points.items():
        kp[0, k] = xy
    return PoseResult(
        keypoints=kp,
        scores=np.ones((1, 308), np.float32),
        boxes=np.array([[0, 0, 511, 511]], np.float32),
        box_scores=np.ones(1, np.float32),
        image_size=(512, 512),
    )


def test_keypoints_outside_the_image_are_flagged_not_moved():
    far, right_edge, past_right, left, below = (1076.0, -390.0), (511.5, 3.0), (512.0, 3.0), (-0.25, 7.0), (9.0, 512.0)  # fmt: skip
    result = _result({0: far, 1: right_edge, 2: past_right, 3: left, 4: below})
    record = pose_frame_record(result, "photo")
    data = json.loads(json.dumps(pose_predictions_json([record], video=None, kpt_thr=0.3)))
    inst = data["frames"][0]["instances"][0]
    assert inst["keypoints_outside_image"] == [0, 2, 3, 4]
    assert inst["keypoints"][0] == [1076.0, -390.0]  # as predicted, not clipped
    assert inst["keypoints"][1] == [511.5, 3.0]


def test_in_image_is_the_pixel_rectangle_and_rejects_non_finite():
    kp = np.array([[0, 0], [47.9, 63.9], [48, 0], [0, 64], [-1e-3, 5], [np.nan, 1], [np.inf, 2]])
    np.testing.assert_array_equal(
        keypoints_in_image(kp, (64, 48)), [True, True, False, False, False, False, False]
    )
