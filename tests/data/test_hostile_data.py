"""Datasets, shards and annotation files from a stranger (issue 24): huge images refused before
decoding, index and tar members checked, COCO structure and palettes validated, each with a
DataError naming the file."""

from __future__ import annotations

import io
import json
import tarfile

import cv2
import numpy as np
import pytest
from tests.hostile import huge_png

from sapiens2.cli.main import main
from sapiens2.data.formats import (
    DataError,
    decode_image,
    decode_npy,
    encode_png,
    load_pose_json,
    load_seg_classes,
)
from sapiens2.data.shards import ShardIndex, ShardWriter
from sapiens2.errors import ImageTooLargeError
from sapiens2.limits import image_size

from ._dataset_factory import write_dataset


def test_huge_images_are_refused_from_their_header(tmp_path, monkeypatch, capsys):
    huge = huge_png(tmp_path / "huge.png").read_bytes()
    assert image_size(huge) == (30000, 30000) and len(huge) < 1000
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a refused image"))
    with pytest.raises(ImageTooLargeError, match=r"30000x30000 pixels \(900.0 MP\).*100 MP"):
        decode_image(huge, "huge.png")
    monkeypatch.setenv("SAPIENS2_MAX_PIXELS", "1000")  # the default limit can be set for all
    with pytest.raises(ImageTooLargeError, match=r"limit of 0\.001 MP"):
        decode_image(encode_png(np.zeros((40, 30, 3), np.uint8)), "small.png")
    monkeypatch.undo()
    # check-data reads every image of a dataset: the huge one is an error, not 2.7 GB
    write_dataset(tmp_path / "d", n=2)
    image = next((tmp_path / "d" / "train" / "images").iterdir())
    huge_png(image)
    assert main(["check-data", "--data", str(tmp_path / "d"), "--task", "seg"]) == 1
    out = capsys.readouterr().out
    assert f"{image.name}: 30000x30000 pixels" in out and "over the limit" in out


def test_npy_header_must_fit_its_bytes():
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3), np.float32))
    # the same 24 bytes of data under a header that declares 120 GB
    lying = buf.getvalue().replace(b"'shape': (2, 3), ", b"'shape': (99999, 99999, 3), ")
    with pytest.raises(DataError, match=r"declares \(99999, 99999, 3\)"):
        decode_npy(lying, "big.npy")
    assert decode_npy(buf.getvalue(), "ok.npy").shape == (2, 3)


def _shards(root, n=3):
    with ShardWriter(root, "train", samples_per_shard=n) as w:
        for i in range(n):
            w.write(f"k{i}", {"jpg": bytes([i]) * 10, "cls": b"1"})
    return root


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["shards"][0]["samples"][0][1].update(jpg=[-5, 10]), "are not inside"),
        (lambda d: d["shards"][0]["samples"][0][1].update(jpg=[512, 2**40]), "are not inside"),
        (lambda d: d["shards"][0]["samples"][0][1].update(jpg=["512", 10]), "integers"),
        (lambda d: d["shards"][0].update(name=7), "plain file 'name'"),
        (lambda d: d["shards"][0].update(name="../train-000000.tar"), "plain file 'name'"),
        (lambda d: d["shards"][0]["samples"].append([3, {}]), r"\[key,"),
        (lambda d: d["shards"][0]["samples"][1].__setitem__(0, "../x"), "invalid"),
        (lambda d: d["shards"][0]["samples"].append(d["shards"][0]["samples"][0]), "also appears"),
    ],
)
def test_shard_index_is_validated(tmp_path, edit, message):
    root = _shards(tmp_path)
    path = root / "train-index.json"
    index = json.loads(path.read_text())
    edit(index)
    path.write_text(json.dumps(index))
    with pytest.raises(DataError, match=message):
        ShardIndex(root, "train")


def test_shard_index_top_level_must_be_an_object(tmp_path):
    root = _shards(tmp_path)
    (root / "train-index.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="a shard index is an object"):
        ShardIndex(root, "train")


def _tar(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_members_with_one_key_are_not_merged(tmp_path):
    twice = _tar(tmp_path / "twice.tar", [("k1.jpg", b"a"), ("k1.jpg", b"b")])
    with pytest.raises(DataError, match=r"member 'k1\.jpg' appears twice"):
        ShardIndex(twice)
    folders = _tar(tmp_path / "folders.tar", [("a/k1.jpg", b"a"), ("b/k1.png", b"b")])
    with pytest.raises(DataError, match="key 'k1' is used in two folders"):
        ShardIndex(folders)
    ok = _tar(tmp_path / "ok.tar", [("a/k1.jpg", b"a"), ("a/k1.cls", b"1"), ("b/k2.jpg", b"c")])
    assert ShardIndex(ok).keys == ["k1", "k2"]


def test_tar_member_past_the_end_of_the_file(tmp_path):
    path = _tar(tmp_path / "cut.tar", [("k1.jpg", b"x" * 5000)])
    path.write_bytes(path.read_bytes()[:2048])  # the header still says 5000 bytes
    with pytest.raises(DataError, match="claims 5000 bytes past the end of the file"):
        ShardIndex(path)


def _pose_file(tmp_path, images, annotations):
    path = tmp_path / "pose.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


@pytest.mark.parametrize(
    ("images", "annotations", "message"),
    [
        ([3], [], r"images\[0\] is a int, not an object"),
        ([{"id": [1], "file_name": "a.png", "width": 4, "height": 4}], [], "'id' must be an int"),
        ([{"id": 1, "file_name": "a.png", "width": "4", "height": 4}], [], "positive integers"),
        ([], ["x"], r"annotations\[0\] is a str, not an object"),
        ([], [{"image_id": None}], "integer 'image_id'"),
        (
            [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
            [{"id": 1, "image_id": 1, "keypoints": ["a"] * 51}],
            "keypoints and bbox must be numbers",
        ),
    ],
)
def test_pose_json_structure_is_validated(tmp_path, images, annotations, message):
    with pytest.raises(DataError, match=message):
        load_pose_json(_pose_file(tmp_path, images, annotations))


def test_pose_json_of_the_wrong_shape_is_one_line_in_check_data(tmp_path, capsys):
    write_dataset(tmp_path, n=2)
    (tmp_path / "train" / "pose.json").write_text(json.dumps({"images": [1], "annotations": []}))
    assert main(["check-data", "--data", str(tmp_path), "--task", "pose"]) == 1
    assert "images[0] is a int, not an object" in capsys.readouterr().out


def test_palette_must_be_integer_triples(tmp_path):
    path = tmp_path / "seg_classes.json"
    for palette in (["red", "green"], [["a", "b", "c"], [1, 2, 3]], [[0, 0, 256], [1, 2, 3]]):
        path.write_text(json.dumps({"names": ["bg", "fg"], "palette": palette}))
        with pytest.raises(DataError, match="palette must be 2 RGB triples of integers"):
            load_seg_classes(path)
    path.write_text(json.dumps({"names": ["bg", "fg"], "palette": [[0, 0, 0], [9, 8, 7]]}))
    assert load_seg_classes(path).palette.tolist() == [[0, 0, 0], [9, 8, 7]]
