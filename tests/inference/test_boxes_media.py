"""Person boxes (user JSON, mask components, fallback) and media sources (folders, globs, videos)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sapiens2.inference.boxes import (
    as_boxes,
    boxes_from_mask,
    load_boxes_json,
    lookup_boxes,
    whole_image_box,
)
from sapiens2.inference.media import (
    FrameReader,
    count_frames,
    expand_media,
    find_mask,
    read_image,
    read_mask,
)


def test_boxes_from_mask_components_inclusive_and_filtered():
    mask = np.zeros((50, 60), bool)
    mask[5:25, 10:20] = True  # 200 px
    mask[30:48, 40:58] = True  # 324 px
    mask[0, 59] = True  # 1 px speck, dropped
    boxes = boxes_from_mask(mask)
    np.testing.assert_array_equal(boxes, [[40, 30, 57, 47], [10, 5, 19, 24]])  # largest first
    assert boxes_from_mask(np.zeros((4, 4), bool)).shape == (0, 4)


def test_user_boxes_validation_and_json(tmp_path):
    xyxy, scores = as_boxes([[1, 2, 3, 4, 0.5], [0, 0, 9, 9, 0.9]])
    assert xyxy.shape == (2, 4) and scores.tolist() == pytest.approx([0.5, 0.9])
    assert as_boxes([1, 2, 3, 4])[1].tolist() == [1.0]
    with pytest.raises(ValueError, match="x2 > x1"):
        as_boxes([[5, 0, 1, 4]])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        as_boxes([[1, 2, 3]])
    path = tmp_path / "boxes.json"
    path.write_text(
        json.dumps({"a.jpg": [[0, 0, 10, 20]], "clip_000003": [[1, 1, 5, 5, 0.7]], "empty": []})
    )
    table = load_boxes_json(path)
    assert lookup_boxes(table, "a.jpg").tolist() == [[0, 0, 10, 20, 1]]
    assert lookup_boxes(table, "clip_000003")[0, 4] == pytest.approx(0.7)
    assert table["empty"].shape == (0, 5) and lookup_boxes(table, "b.png") is None
    (tmp_path / "bad.json").write_text('{"a.jpg": [[1, 2]]}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_boxes_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_boxes_json(tmp_path / "missing.json")
    assert whole_image_box(10, 20).tolist() == [[0, 0, 19, 9]]


def _write_video(path, n=3, size=(48, 64)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, size)
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), (40 * i) % 256, np.uint8))
    w.release()


@pytest.mark.parametrize("workers", [1, 2])
def test_expand_media_and_frame_reader(tmp_path, workers):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rgb = np.zeros((8, 6, 3), np.uint8)
    rgb[..., 0] = 255  # red
    cv2.imwrite(str(folder / "b.png"), rgb[..., ::-1])
    cv2.imwrite(str(folder / "a.png"), rgb[..., ::-1])
    (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    _write_video(tmp_path / "clip.mp4")

    items = expand_media([folder, str(tmp_path / "*.mp4")])
    assert [(i.path.name, i.kind, i.name) for i in items] == [
        ("a.jpg", "image", "a"),
        ("a.png", "image", "a_png"),
        ("b.png", "image", "b"),
        ("clip.mp4", "video", "clip"),
    ]
    assert count_frames(items) == 6
    with FrameReader(items + items[:2], prefetch=2, workers=workers) as reader:
        frames = list(reader)
    assert [f.name for f in frames] == [
        "a",
        "a_png",
        "b",
        "clip_000000",
        "clip_000001",
        "clip_000002",
        "a",
        "a_png",
    ]
    assert frames[6].error is not None and frames[7].rgb is not None
    assert frames[0].rgb is None and "cannot decode" in frames[0].error
    assert frames[1].rgb[0, 0].tolist() == [255, 0, 0]  # RGB order
    assert [f.last for f in frames[3:6]] == [False, False, True] and frames[3].fps == pytest.approx(
        5
    )
    assert frames[4].rgb.shape == (64, 48, 3)
    np.testing.assert_array_equal(read_image(folder / "b.png"), rgb)

    # the prepare hook runs on every decoded frame (images and video frames), not on failures
    with FrameReader(items, workers=workers, prepare=lambda x: x.shape) as reader:
        prepared = [f.prepared for f in reader]
    assert prepared == [None, (8, 6, 3), (8, 6, 3)] + [(64, 48, 3)] * 3

    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        expand_media([tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="no image or video"):
        expand_media([str(tmp_path / "*.gif")])


def test_frame_reader_stops_early(tmp_path):
    _write_video(tmp_path / "long.mp4", n=30)
    reader = FrameReader(expand_media([tmp_path / "long.mp4"]), prefetch=2)
    for i, _ in enumerate(reader):
        if i == 2:
            break
    reader.close()
    assert reader._thread is not None and not reader._thread.is_alive()


def test_masks_from_files(tmp_path):
    labels = np.zeros((6, 5), np.uint8)
    labels[2:4, 1:3] = 7
    cv2.imwrite(str(tmp_path / "im_seg.png"), labels)
    np.save(tmp_path / "other.npy", labels > 0)
    (tmp_path / "x.png").write_bytes(b"")
    items = expand_media([tmp_path / "x.png"])
    from sapiens2.inference.media import Frame

    frame = Frame(item=items[0], name="im")
    assert find_mask(tmp_path, frame) == tmp_path / "im_seg.png"
    assert read_mask(tmp_path / "im_seg.png").sum() == 4
    assert read_mask(tmp_path / "other.npy").sum() == 4
    assert find_mask(tmp_path, Frame(item=items[0], name="nothing")) is None
