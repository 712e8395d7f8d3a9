"""Pose outputs other tools read: COCO-WholeBody split results, COCO annotation files and
detection results as inputs, OpenPose JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sapiens2.data.metadata import keypoints308
from sapiens2.errors import BoxesError, DataError
from sapiens2.inference.boxes import load_boxes_json, lookup_boxes
from sapiens2.inference.coco import load_coco_images
from sapiens2.inference.export import WHOLEBODY_PARTS, coco_results
from sapiens2.inference.openpose import BODY25_NAMES, openpose_json, openpose_mapping
from sapiens2.inference.results import PoseResult


def _pose(n=2, size=(100, 80), seed=0) -> PoseResult:
    rng = np.random.default_rng(seed)
    h, w = size
    kp = np.stack([rng.uniform(0, w - 1, (n, 308)), rng.uniform(0, h - 1, (n, 308))], -1)
    return PoseResult(
        kp.astype(np.float32),
        rng.uniform(0.5, 1.2, (n, 308)).astype(np.float32),
        np.tile(np.array([[1, 2, 60, 90]], np.float32), (n, 1)),
        np.ones(n, np.float32),
        size,
    )


def test_wholebody_results_are_split_into_the_five_parts():
    res = _pose()
    k133, s133 = res.to_coco_wholebody()
    rec = coco_results(res, 5, "img", kpt_thr=0.0, layout="coco_wholebody133")[1]
    sizes = {name: len(rec[name]) // 3 for name in WHOLEBODY_PARTS}
    assert sizes == {"keypoints": 17, "foot_kpts": 6, "face_kpts": 68, "lefthand_kpts": 21, "righthand_kpts": 21}  # fmt: skip
    joined = np.concatenate([np.reshape(rec[name], (-1, 3)) for name in WHOLEBODY_PARTS])
    np.testing.assert_allclose(joined[:, :2], k133[1], atol=1e-3)
    np.testing.assert_allclose(joined[:, 2], s133[1], atol=1e-3)
    meta = keypoints308()
    lh = np.reshape(rec["lefthand_kpts"], (21, 3))
    np.testing.assert_allclose(lh[0, :2], res.keypoints[1, meta.index("left_wrist")], atol=1e-3)
    assert not np.any(rec["face_kpts"])  # no COCO face point in the official mapping


def _coco_gt(tmp_path, **extra):
    gt = {
        "images": [
            {"id": 42, "file_name": "val/a.png", "width": 48, "height": 64},
            {"id": 7, "file_name": "b.jpg", "width": 48, "height": 64},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 1, "bbox": [2, 3, 20, 30], "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0, 0, 40, 60], "iscrowd": 1},
            {"id": 3, "image_id": 42, "category_id": 2, "bbox": [5, 5, 10, 10]},
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [1, 1, 0, 5]},  # no size: skipped
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    gt.update(extra)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def test_coco_gt_gives_ids_by_file_name_and_the_person_boxes(tmp_path):
    coco = load_coco_images(_coco_gt(tmp_path))
    assert coco.ids == {"a.png": 42, "b.jpg": 7} and coco.names == {42: "a.png", 7: "b.jpg"}
    assert list(coco.boxes) == ["a.png", "b.jpg"] and coco.boxes["b.jpg"].shape == (0, 5)
    np.testing.assert_array_equal(coco.boxes["a.png"], [[2, 3, 22, 33, 1]])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "no 'images' list"),
        ('{"images": [{"file_name": "a.png"}]}', r"images\[0\] has no integer 'id'"),
        ('{"images": [{"id": 1}]}', "has no 'file_name'"),
        (
            '{"images": [{"id": 1, "file_name": "x/a.png"}, {"id": 2, "file_name": "a.png"}]}',
            "two images are named 'a.png'",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 3, "bbox": [0, 0, 1, 1]}]}',
            "image id 3, which is not in",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1]}]}',
            r"bbox must be \[x, y, w, h\]",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_coco_gt_is_a_one_line_data_error(tmp_path, content, message):
    path = tmp_path / "gt.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_coco_images(path)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not found"):
        load_coco_images(tmp_path / "missing.json")


def test_boxes_accept_coco_detection_results(tmp_path):
    dets = [
        {"image_id": 42, "category_id": 1, "bbox": [2, 3, 20, 30], "score": 0.9},
        {"image_id": 42, "category_id": 3, "bbox": [2, 3, 20, 30], "score": 0.9},  # a car
        {"image_id": 397133, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    names = load_coco_images(_coco_gt(tmp_path)).names
    table = load_boxes_json(path, image_names=names)  # 397133 is not in the gt: dropped
    assert list(table) == ["a.png"]
    np.testing.assert_allclose(table["a.png"], [[2, 3, 22, 33, 0.9]], rtol=1e-6)
    by_id = load_boxes_json(path)  # without a gt: the id, matching COCO's numeric file names
    assert lookup_boxes(by_id, "000000397133.jpg") is by_id["397133"]
    assert lookup_boxes(by_id, "397133x.jpg") is None
    path.write_text(json.dumps([{"image_id": "a", "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(BoxesError, match=r"dets.json\[0\]: expected a COCO detection"):
        load_boxes_json(path)
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}]))
    with pytest.raises(BoxesError, match="score must be a number"):
        load_boxes_json(path)


def test_openpose_json_takes_the_mapped_points_and_zeroes_the_rest():
    res = _pose(n=1)
    meta = keypoints308()
    res.scores[0, meta.index("left_knee")] = 0.1  # below the threshold: not detected
    res.keypoints[0, meta.index("right_heel")] = (-5.0, 10.0)  # outside the image
    data = json.loads(json.dumps(openpose_json(res, kpt_thr=0.3)))
    assert data["canvas_width"] == 80 and data["canvas_height"] == 100
    (person,) = data["people"]
    body = np.reshape(person["pose_keypoints_2d"], (25, 3))
    kp, sc = res.keypoints[0], res.scores[0]
    nose = BODY25_NAMES.index("Nose")
    np.testing.assert_allclose(body[nose], [*kp[0], min(sc[0], 1)], atol=1e-3)
    sh = [meta.index("left_shoulder"), meta.index("right_shoulder")]
    np.testing.assert_allclose(body[1, :2], kp[sh].mean(0), atol=1e-3)  # neck: shoulder midpoint
    assert body[1, 2] == pytest.approx(min(sc[sh].min(), 1), abs=1e-3)
    assert (body[BODY25_NAMES.index("LKnee")] == 0).all()
    assert (body[BODY25_NAMES.index("RHeel")] == 0).all()
    assert (body[:, 2] <= 1).all()
    face = np.reshape(person["face_keypoints_2d"], (70, 3))
    assert len(face) == 70 and (face[:, 2] > 0).sum() == 22 == len(
        [g for g in openpose_mapping()["face_keypoints_2d"] if g]
    )
    np.testing.assert_allclose(face[69, :2], kp[meta.index("l_center_of_pupil")], atol=1e-3)
    assert (face[0] == 0).all()  # jaw line: no counterpart
    right = np.reshape(person["hand_right_keypoints_2d"], (21, 3))
    np.testing.assert_allclose(right[4, :2], kp[meta.index("right_thumb4")], atol=1e-3)
    np.testing.assert_allclose(right[0, :2], kp[meta.index("right_wrist")], atol=1e-3)
    assert (right[:, 2] > 0).all() and person["pose_keypoints_3d"] == []
