"""Output videos hold every frame: pictures of one size per video, and a lost frame is an error."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from sapiens2.errors import OutputError
from sapiens2.inference.media import Frame, MediaItem
from sapiens2.inference.results import SegResult
from sapiens2.inference.writer import PredictionWriter

H, W, N = 64, 48, 6


def count_frames(path: Path) -> int:
    """Frames that decode, read back one by one (not the container's count)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _frames(item: MediaItem, n: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        yield Frame(item, f"{item.name}_{i:06d}", i, rgb, fps=5.0, last=i == n - 1)


def test_seg_video_keeps_every_frame_when_the_classes_change(tmp_path):
    """The legend used to follow the classes of each frame, so the picture's width changed and
    OpenCV's writer dropped every frame of another size (with a logged warning only)."""
    item = MediaItem(tmp_path / "clip.mp4", "video", "clip")
    writer = PredictionWriter("seg", tmp_path / "out")
    for i, frame in enumerate(_frames(item, N)):
        labels = np.zeros((H, W), np.uint8)
        labels[: 8 * i] = np.arange(W) % (1 + 5 * i)  # none, then more and more classes
        writer.write(frame, SegResult(labels))
    writer.close()
    assert count_frames(tmp_path / "out" / "clip.mp4") == N


def test_a_picture_of_another_size_is_fitted_and_logged(tmp_path, caplog):
    item = MediaItem(tmp_path / "clip.mp4", "video", "clip")
    writer = PredictionWriter("seg", tmp_path / "out")
    frames = list(_frames(item, 3))
    writer._add_video_frame(frames[0], np.zeros((H, 2 * W, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="sapiens2.inference.writer"):
        writer._add_video_frame(frames[1], np.full((H, 3 * W, 3), 255, np.uint8))
        writer._add_video_frame(frames[2], np.full((H // 2, W, 3), 255, np.uint8))
    writer.close()
    assert len(caplog.records) == 1 and "fitting it" in caplog.text
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    shapes = []
    while (got := cap.read())[0]:
        shapes.append(got[1].shape)
    assert shapes == [(H, 2 * W, 3)] * 3


class _DroppingWriter:
    """A video encoder that silently drops its second frame, as OpenCV does on a bad frame."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.count, self.codec = inner.count, inner.codec

    def write(self, image):
        self.calls += 1
        if self.calls != 2:
            self.inner.write(image)

    def close(self):
        self.inner.close()


def test_a_frame_lost_by_the_encoder_is_an_error(tmp_path):
    item = MediaItem(tmp_path / "clip.mp4", "video", "clip")
    writer = PredictionWriter("seg", tmp_path / "out")
    frames = list(_frames(item, 3))
    writer.write(frames[0], SegResult(np.zeros((H, W), np.uint8)))
    video = writer._videos[item]
    video._encoder = _DroppingWriter(video._encoder)
    writer.write(frames[1], SegResult(np.zeros((H, W), np.uint8)))
    with pytest.raises(OutputError, match=r"clip.mp4 holds 2 of the 3 frames written"):
        writer.write(frames[2], SegResult(np.zeros((H, W), np.uint8)))
