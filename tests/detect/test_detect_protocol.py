"""The Detector protocol and the official post-filter (score > 0.3, NMS 0.3 "+1", fallback)."""

from __future__ import annotations

import numpy as np
import pytest

from sapiens2.detect import (
    Detector,
    PersonBoxes,
    RTMDetDetector,
    detect_person_boxes,
    filter_person_boxes,
    nms_plus_one,
)


def test_nms_uses_plus_one_areas():
    # Two 10x10 boxes (11x11 with +1) overlapping in x by 5 px (6 with +1):
    # +1 IoU = 66 / (121 + 121 - 66) = 0.375 > 0.3 -> suppressed; the plain IoU would be
    # 50 / 150 = 0.333, and with threshold 0.35 the boxes would differ in outcome.
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert nms_plus_one(boxes, scores, 0.3).tolist() == [0]
    assert nms_plus_one(boxes, scores, 0.36).tolist() == [0]  # 0.375 > 0.36 (plain 0.333 keeps)
    assert nms_plus_one(boxes, scores, 0.4).tolist() == [0, 1]


def test_nms_is_greedy_in_score_order():
    boxes = np.array(
        [[0, 0, 10, 10], [100, 100, 120, 120], [1, 1, 11, 11], [6, 6, 16, 16]], dtype=np.float32
    )
    scores = np.array([0.5, 0.4, 0.9, 0.3], dtype=np.float32)
    # Box 2 wins over 0 (IoU high); 3 overlaps 2 by 6x6(+1 -> 6x6) of 121: kept at 0.3.
    keep = nms_plus_one(boxes, scores, 0.3)
    assert keep.tolist() == [2, 1, 3]


def test_nms_boundary_is_kept_when_equal():
    # Identical boxes have IoU 1; with threshold 1.0 "<= thr" keeps both.
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 4]], dtype=np.float32)
    scores = np.array([0.6, 0.7], dtype=np.float32)
    assert nms_plus_one(boxes, scores, 1.0).tolist() == [1, 0]
    assert nms_plus_one(boxes, scores, 0.99).tolist() == [1]


def test_nms_empty_and_bad_shapes():
    assert nms_plus_one(np.zeros((0, 4)), np.zeros(0), 0.3).shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        nms_plus_one(np.zeros((3, 5)), np.zeros(3), 0.3)
    with pytest.raises(ValueError, match="scores"):
        nms_plus_one(np.zeros((3, 4)), np.zeros(2), 0.3)


def test_filter_keeps_confident_non_overlapping_boxes():
    boxes = np.array(
        [[10, 10, 50, 90], [12, 11, 52, 92], [200, 30, 260, 140], [300, 0, 320, 20]],
        dtype=np.float32,
    )
    scores = np.array([0.95, 0.9, 0.6, 0.3], dtype=np.float32)  # 0.3 is not > 0.3
    out = filter_person_boxes(boxes, scores, (480, 640))
    assert isinstance(out, PersonBoxes) and not out.is_fallback
    np.testing.assert_array_equal(out.boxes, boxes[[0, 2]])
    np.testing.assert_array_equal(out.scores, scores[[0, 2]])


def test_filter_falls_back_to_the_whole_image():
    boxes = np.array([[10, 10, 50, 90]], dtype=np.float32)
    for b, s in ((boxes, np.array([0.2], np.float32)), (np.zeros((0, 4)), np.zeros(0))):
        out = filter_person_boxes(b, s, (480, 640))
        assert out.is_fallback
        np.testing.assert_array_equal(out.boxes, [[0, 0, 639, 479]])
        assert out.boxes.dtype == np.float32
        np.testing.assert_array_equal(out.scores, [1.0])


def test_detectors_plug_in_through_the_protocol(tiny_detector, fixture_rgb, fixture_detections):
    class Fixed:
        def __call__(self, image_rgb):
            return np.array([[1, 2, 30, 40]], np.float32), np.array([0.8], np.float32)

    assert isinstance(Fixed(), Detector)
    assert isinstance(tiny_detector, Detector)
    out = detect_person_boxes(Fixed(), fixture_rgb)
    np.testing.assert_array_equal(out.boxes, [[1, 2, 30, 40]])
    # The random-weight fixture detector gives many overlapping high-score boxes; NMS thins them.
    assert isinstance(tiny_detector, RTMDetDetector)
    boxes, scores = fixture_detections  # tiny_detector(fixture_rgb)
    persons = filter_person_boxes(boxes, scores, fixture_rgb.shape[:2])
    assert 1 <= len(persons.boxes) < len(boxes)
    keep = nms_plus_one(persons.boxes, persons.scores, 0.3)
    assert sorted(keep.tolist()) == list(range(len(persons.boxes)))  # already NMS-clean
