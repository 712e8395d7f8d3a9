"""Pose prediction with the built-in RTMDet detector: one skeleton per detected person, one forward."""

from __future__ import annotations

import json
import shutil

import numpy as np
from tests.conftest import FIXTURES

import sapiens2
from sapiens2.cli.main import main
from sapiens2.detect.protocol import filter_person_boxes
from sapiens2.inference import Predictor
from sapiens2.inference.media import read_image

DET = FIXTURES / "rtmdet" / "rtmdet_tiny_person_random.pth"
IMAGE = FIXTURES / "rtmdet" / "rtmdet_tiny_person_random.png"


def test_predict_pose_with_detector_one_skeleton_per_person(tmp_path, fixture_detections):
    model = sapiens2.create_model("sapiens2_tiny", task="pose")
    sapiens2.save_model(model, tmp_path / "pose.safetensors")
    shutil.copy(IMAGE, tmp_path / "people.png")
    rgb = read_image(IMAGE)
    boxes, scores = fixture_detections  # the detector's output on this image
    expected = len(filter_person_boxes(boxes, scores, rgb.shape[:2]).boxes)
    assert expected > 1  # the random-weight fixture detector finds several "people"
    args = ["predict", "--task", "pose", "--model", str(tmp_path / "pose.safetensors"),
            "--detector", str(DET), "--input-size", "128", "96", "--device", "cpu",
            "--out", str(tmp_path / "out"), str(tmp_path / "people.png")]  # fmt: skip
    assert main(args) == 0
    pred = json.loads((tmp_path / "out" / "predictions.json").read_text())
    instances = pred["frames"][0]["instances"]
    assert len(instances) == expected
    assert all(len(i["keypoints"]) == 308 for i in instances)


def test_all_people_of_an_image_go_through_one_forward(tiny_detector, fixture_rgb):
    model = sapiens2.create_model("sapiens2_tiny", task="pose")
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    predictor = Predictor(
        "pose", model, input_size=(128, 96), detector=tiny_detector, batch_size=64
    )
    assert np.array_equal(read_image(IMAGE), fixture_rgb)
    result = predictor.predict(fixture_rgb)
    n = len(result.boxes)
    assert n > 1 and result.keypoints.shape == (n, 308, 2)
    assert calls == [2 * n]  # the crops and their flipped copies, batched together
    assert np.isfinite(result.keypoints).all() and result.scores.shape == (n, 308)
