"""Person instances from a mask and a depth map (people overlapping in the image, apart in depth)."""

from __future__ import annotations

import numpy as np
import pytest

from sapiens2.inference.boxes import people_from_depth


def _scene():
    """Two overlapping 'people' (rectangles) at 2 m and 3 m, and a far speck."""
    mask = np.zeros((200, 150), bool)
    depth = np.zeros((200, 150), np.float32)
    mask[40:190, 20:80] = True
    depth[40:190, 20:80] = 3.0
    mask[30:180, 60:120] = True
    depth[30:180, 60:120] = 2.0 + np.linspace(0, 0.05, 60)[None]  # a smooth slope is one person
    mask[5:8, 140:143] = True
    depth[5:8, 140:143] = 2.5
    return mask, depth


def test_people_overlapping_in_the_image_are_split_by_depth():
    mask, depth = _scene()
    labels, boxes = people_from_depth(mask, depth)
    assert len(boxes) == 2  # the speck is under the area floor
    # the nearer person comes first (larger visible area) and keeps its box
    np.testing.assert_allclose(boxes[0], [60, 30, 119, 179], atol=2)
    # the farther one: its visible part, incl. its feet below the nearer one
    np.testing.assert_allclose(boxes[1], [20, 40, 79, 189], atol=2)
    assert labels.shape == mask.shape and set(np.unique(labels)) == {0, 1, 2}
    assert not labels[~mask].any()


def test_the_same_mask_at_one_depth_is_one_person():
    mask, _ = _scene()
    _, boxes = people_from_depth(mask, np.where(mask, 2.0, 0).astype(np.float32))
    assert len(boxes) == 1


def test_the_jump_threshold_is_relative():
    mask, depth = _scene()
    # 3 m vs 2 m is a 50% step: a 60% threshold no longer cuts it
    assert len(people_from_depth(mask, depth, max_jump=0.6)[1]) == 1
    assert len(people_from_depth(mask, depth * 10)[1]) == 2


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="mask and depth"):
        people_from_depth(np.zeros((4, 4), bool), np.zeros((4, 5), np.float32))
