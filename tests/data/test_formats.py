"""Readers return what was written and report bad data with the file name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sapiens2.data.formats import (
    DataError,
    DatasetFolder,
    coco_wholebody_to_308,
    encode_png,
    load_pose_json,
    load_seg_classes,
)
from sapiens2.data.metadata import keypoints308

from ._dataset_factory import write_dataset


@pytest.fixture
def dataset(tmp_path):
    samples = write_dataset(tmp_path, n=2)
    return tmp_path, samples


def test_folder_round_trip(dataset):
    root, samples = dataset
    folder = DatasetFolder(root, "train")
    assert folder.ids == ["s000", "s001"]
    for task in ("pose", "seg", "normal", "pointmap", "albedo"):
        folder.check(task)
    got = folder.read("s001", ["mask", "seg", "normal", "pointmap", "camera", "albedo"])
    s = samples[1]
    for f in ("image", "mask", "seg", "normal", "pointmap", "albedo"):
        np.testing.assert_array_equal(got[f], s[f], err_msg=f)
    np.testing.assert_allclose(got["camera"].K, s["K"])
    images = folder.pose_images()
    assert [len(im.instances) for im in images] == [1, 2]
    np.testing.assert_array_equal(images[1].instances[1].keypoints, s["keypoints"][1])


def test_missing_image_is_reported(dataset):
    root, _ = dataset
    (root / "train" / "images" / "s001.png").unlink()
    with pytest.raises(DataError, match=r"s001\.png.*missing"):
        DatasetFolder(root, "train").pose_images()


def test_missing_label_file_is_reported(dataset):
    root, _ = dataset
    (root / "train" / "seg" / "s000.png").unlink()
    with pytest.raises(DataError, match=r"seg/s000\.png"):
        DatasetFolder(root, "train").check("seg")
    with pytest.raises(DataError, match=r"seg/s000\.png: missing"):
        DatasetFolder(root, "train").read("s000", ["seg"])


def test_label_of_wrong_size_is_reported(dataset):
    root, _ = dataset
    (root / "train" / "seg" / "s001.png").write_bytes(encode_png(np.zeros((39, 30), np.uint8)))
    with pytest.raises(DataError, match=r"seg/s001\.png: label image is 39x30 .* image is 40x30"):
        DatasetFolder(root, "train").read("s001", ["seg"])


def test_label_values_out_of_range_are_reported(dataset):
    root, _ = dataset
    seg = np.zeros((40, 30), np.uint8)
    seg[3, 3] = 29
    (root / "train" / "seg" / "s000.png").write_bytes(encode_png(seg))
    with pytest.raises(DataError, match=r"s000\.png: labels \[29\] outside 0..28"):
        DatasetFolder(root, "train").read("s000", ["seg"])


def test_nan_and_non_unit_normals_are_reported(dataset):
    root, samples = dataset
    n = samples[0]["normal"].copy()
    n[0, 0, 1] = np.nan
    np.save(root / "train" / "normal" / "s000.npy", n)
    with pytest.raises(DataError, match=r"normal/s000\.npy: normal map has 1 pixels with NaN"):
        DatasetFolder(root, "train").read("s000", ["normal", "mask"])
    n = samples[0]["normal"] * 0.5
    np.save(root / "train" / "normal" / "s000.npy", n)
    with pytest.raises(DataError, match=r"s000\.npy: \d+ foreground pixels have non-unit normals"):
        DatasetFolder(root, "train").read("s000", ["normal", "mask"])


def test_camera_and_pointmap_checks(dataset):
    root, samples = dataset
    cam = root / "train" / "camera" / "s000.json"
    cam.write_text(json.dumps({"K": samples[0]["K"].tolist(), "width": 31, "height": 40}))
    with pytest.raises(DataError, match=r"camera/s000\.json: camera is for a 40x31"):
        DatasetFolder(root, "train").read("s000", ["camera"])
    cam.write_text(json.dumps({"K": [[0, 0, 1], [0, 1, 1], [0, 0, 1]], "width": 30, "height": 40}))
    with pytest.raises(DataError, match="fx, fy > 0"):
        DatasetFolder(root, "train").read("s000", ["camera"])
    pm = samples[0]["pointmap"].copy()
    pm[20, 15, 2] = -1.0
    np.save(root / "train" / "pointmap" / "s000.npy", pm)
    with pytest.raises(
        DataError, match=r"pointmap/s000\.npy: 1 foreground pixels have depth Z <= 0"
    ):
        DatasetFolder(root, "train").read("s000", ["pointmap", "mask"])


def _edit_pose(root, fn):
    p = root / "train" / "pose.json"
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))
    return p


def test_keypoints_out_of_range_are_reported(dataset):
    root, _ = dataset

    def push_out(d):
        d["annotations"][1]["goliath_wholebody_kpts"][0] = 31.0  # x of keypoint 0 beyond width 30

    p = _edit_pose(root, push_out)
    ann_id = json.loads(p.read_text())["annotations"][1]["id"]
    with pytest.raises(
        DataError,
        match=rf"pose\.json: annotation id={ann_id}: 1 labelled keypoints outside the 30x40 image",
    ):
        load_pose_json(p)
    images = load_pose_json(p, out_of_range="drop")
    assert images[1].instances[0].keypoints[0, 2] == 0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["annotations"][0].__setitem__("goliath_wholebody_kpts", [1.0] * 30),
            "has 30 values, expected 308",
        ),
        (
            lambda d: d["annotations"][0]["goliath_wholebody_kpts"].__setitem__(2, 3),
            "visibility values",
        ),
        (
            lambda d: d["annotations"][0]["goliath_wholebody_kpts"].__setitem__(1, float("nan")),
            "NaN",
        ),
        (lambda d: d["annotations"][0].__setitem__("image_id", 99), "unknown image_id 99"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [0, 0, -1, 4]), "bbox must be"),
        (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id"),
    ],
)
def test_bad_pose_annotations_are_reported(dataset, edit, message):
    root, _ = dataset
    p = _edit_pose(root, edit)
    with pytest.raises(DataError, match=message) as e:
        load_pose_json(p)
    assert str(p) in str(e.value)


def test_coco_wholebody_mapping():
    meta = keypoints308()
    rng = np.random.default_rng(0)
    wb = rng.uniform(1, 50, size=(133, 3))
    wb[:, 2] = 2
    ann = {
        "keypoints": wb[:17].ravel().tolist(),
        "foot_kpts": wb[17:23].ravel().tolist(),
        "face_kpts": wb[23:91].ravel().tolist(),
        "lefthand_kpts": wb[91:112].ravel().tolist(),
        "righthand_kpts": wb[112:].ravel().tolist(),
    }
    out = coco_wholebody_to_308(ann)
    mapping = meta.coco_wholebody_to_goliath
    for src, dst in mapping.items():
        np.testing.assert_allclose(out[dst], wb[src], rtol=1e-6)
    unmapped = np.setdiff1d(np.arange(308), list(mapping.values()))
    assert (out[unmapped] == 0).all()
    assert meta.names[mapping[9]] == "left_wrist" and meta.names[mapping[16]] == "right_ankle"
    # plain COCO (17 body points only): everything else unlabelled
    body = coco_wholebody_to_308({"keypoints": wb[:17].ravel().tolist()})
    assert (body[:, 2] > 0).sum() == 17
    with pytest.raises(DataError, match="'foot_kpts' has 3 values, expected 18"):
        coco_wholebody_to_308({"keypoints": wb[:17].ravel().tolist(), "foot_kpts": [1, 2, 3]})


def test_pose_file_with_coco_wholebody_annotations(tmp_path):
    wb = np.zeros((133, 3))
    wb[0] = [10, 12, 2]
    wb[112] = [5, 6, 1]  # right hand root: not in the 308 layout
    wb[95] = [7, 8, 2]  # mapped hand point
    d = {
        "images": [{"id": 1, "file_name": "images/a.png", "width": 30, "height": 40}],
        "annotations": [
            {
                "id": 5,
                "image_id": 1,
                "bbox": [0, 0, 20, 30],
                "keypoints": wb[:17].ravel().tolist(),
                "lefthand_kpts": wb[91:112].ravel().tolist(),
                "righthand_kpts": wb[112:].ravel().tolist(),
            }
        ],
    }
    p = tmp_path / "pose.json"
    p.write_text(json.dumps(d))
    kp = load_pose_json(p)[0].instances[0].keypoints
    assert (kp[:, 2] > 0).sum() == 2
    np.testing.assert_array_equal(kp[keypoints308().coco_wholebody_to_goliath[95]], [7, 8, 2])


def test_user_seg_classes(tmp_path, dataset):
    root, _ = dataset
    (root / "seg_classes.json").write_text(
        json.dumps({"names": ["bg", "left", "right"], "flip_pairs": [[1, 2]]})
    )
    folder = DatasetFolder(root, "train")
    assert folder.seg_classes.names == (
        "bg",
        "left",
        "right",
    ) and folder.seg_classes.flip_pairs == ((1, 2),)
    with pytest.raises(DataError, match=r"labels \[3, 6, 15\] outside 0..2"):
        folder.read("s000", ["seg"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"names": ["a", "b"], "flip_pairs": [[0, 2]]}))
    with pytest.raises(DataError, match=r"bad\.json: invalid flip pair"):
        load_seg_classes(bad)


def test_unreadable_image(dataset):
    root, _ = dataset
    (root / "train" / "images" / "s000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"images/s000\.png: not a readable image"):
        DatasetFolder(root, "train").read("s000", [])
