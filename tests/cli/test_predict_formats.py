"""``sapiens2 predict`` pose outputs for other tools: ``--coco-gt`` ids and boxes, COCO detection
results as ``--boxes``, COCO-WholeBody split results, ``--openpose`` files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import sapiens2
from sapiens2.cli.main import main

H, W = 64, 48


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    torch.manual_seed(0)
    model = root / "pose.safetensors"
    sapiens2.save_model(sapiens2.create_model("sapiens2_tiny", task="pose"), model)
    gt = {
        "images": [
            {"id": 101, "file_name": "images/a.png", "width": W, "height": H},
            {"id": 202, "file_name": "images/b.png", "width": W, "height": H},
        ],  # c.png is not in the annotation file
        "annotations": [
            {"id": 1, "image_id": 101, "category_id": 1, "bbox": [2, 3, 20, 30], "iscrowd": 0},
            {"id": 2, "image_id": 101, "category_id": 1, "bbox": [10, 5, 30, 50], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "gt.json").write_text(json.dumps(gt))
    return root, images, model


def _predict(setup, out, *extra):
    _root, images, model = setup
    argv = ["predict", "--task", "pose", "--model", str(model), "--out", str(out), "--device",
            "cpu", "--input-size", "128", "96", "--no-flip-test", "--no-pictures", *extra,
            str(images)]  # fmt: skip
    return main(argv)


def test_coco_gt_ids_and_boxes_wholebody_split_and_openpose(setup, tmp_path):
    root = setup[0]
    out = tmp_path / "out"
    assert _predict(setup, out, "--coco-gt", str(root / "gt.json"), "--coco-layout",
                    "coco_wholebody133", "--openpose") == 0  # fmt: skip
    coco = json.loads((out / "coco_results.json").read_text())
    # a.png: its two annotated boxes; b.png: no person annotation, no one; c.png: no id, left out
    assert [(c["image_id"], c["bbox"]) for c in coco] == [(101, [2, 3, 20, 30]), (101, [10, 5, 30, 50])]  # fmt: skip
    assert all(len(c["face_kpts"]) == 68 * 3 and len(c["keypoints"]) == 17 * 3 for c in coco)
    preds = json.loads((out / "predictions.json").read_text())
    assert [f["image_name"] for f in preds["frames"]] == ["a", "b", "c"]
    assert preds["frames"][1]["instances"] == [] and len(preds["frames"][2]["instances"]) == 1
    a = json.loads((out / "a_keypoints.json").read_text())
    assert len(a["people"]) == 2 and len(a["people"][0]["pose_keypoints_2d"]) == 75
    assert json.loads((out / "b_keypoints.json").read_text())["people"] == []
    assert sorted(p.name for p in out.glob("*_keypoints.json")) == [
        "a_keypoints.json", "b_keypoints.json", "c_keypoints.json"
    ]  # fmt: skip


def test_coco_detections_as_boxes(setup, tmp_path):
    root = setup[0]
    dets = [
        {"image_id": 202, "category_id": 1, "bbox": [4, 4, 20, 40], "score": 0.75},
        {"image_id": 202, "category_id": 5, "bbox": [4, 4, 20, 40], "score": 0.9},
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    assert _predict(setup, out, "--coco-gt", str(root / "gt.json"), "--boxes",
                    str(tmp_path / "dets.json")) == 0  # fmt: skip
    preds = json.loads((out / "predictions.json").read_text())
    b = preds["frames"][1]["instances"]
    assert [(i["bbox"], i["bbox_score"]) for i in b] == [([4, 4, 24, 44], 0.75)]


def test_format_flags_are_pose_only_and_bad_files_one_line(setup, tmp_path, capsys):
    _root, images, model = setup
    argv = ["predict", "--task", "seg", "--model", str(model), "--out", str(tmp_path / "o"),
            "--device", "cpu", "--openpose", str(images)]  # fmt: skip
    assert main(argv) != 0
    assert "--openpose is only used with --task pose" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"images": 3}')
    assert _predict(setup, tmp_path / "o2", "--coco-gt", str(tmp_path / "bad.json")) != 0
    err = capsys.readouterr().err
    assert "bad.json: not a COCO annotation file" in err and "Traceback" not in err
