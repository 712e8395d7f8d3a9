"""Preprocessing (normalisation, seg stretch, letterbox) and dense post-processing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes import ConstantDenseModel

from sapiens2.inference import Predictor
from sapiens2.inference.postprocess import albedo_map, metric_pointmap, normal_map, seg_labels
from sapiens2.inference.preprocess import (
    MEAN,
    STD,
    letterbox,
    stretch_resize,
    to_tensor,
    unletterbox,
)


def test_normalisation_constants():
    img = np.empty((2, 3, 3), np.uint8)
    img[0] = np.round(MEAN).astype(np.uint8)
    img[1] = 0
    x = to_tensor([img])
    assert x.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(x[0, :, 0].numpy().T, [(np.round(MEAN) - MEAN) / STD] * 3, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 1, 0].numpy(), -np.array(MEAN) / np.array(STD), rtol=1e-6)


def test_seg_stretch_resize_interpolation_rule():
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        stretch_resize(big, (64, 48)), cv2.resize(big, (48, 64), interpolation=cv2.INTER_AREA)
    )
    small = big[:20, :16]
    up = stretch_resize(small, (64, 48))
    np.testing.assert_array_equal(up, cv2.resize(small, (48, 64), interpolation=cv2.INTER_CUBIC))
    assert not np.array_equal(up, cv2.resize(small, (48, 64), interpolation=cv2.INTER_LINEAR))


def test_letterbox_truncates_and_centres():
    img = np.full((50, 100, 3), 200, np.uint8)  # wide image into a tall 1024x768 input
    out, p = letterbox(img, (1024, 768))
    assert out.shape == (1024, 768, 3)
    assert p.new_hw == (384, 768) and (p.top, p.bottom, p.left, p.right) == (320, 320, 0, 0)
    assert out[:320].max() == 0 and out[-320:].max() == 0 and out[320:704].min() == 200
    # truncating int() sizes and the odd padding going to the bottom/right
    out, p = letterbox(np.zeros((33, 17, 3), np.uint8), (64, 48))
    s = min(48 / 17, 64 / 33)
    assert p.new_hw == (int(33 * s), int(17 * s)) == (64, 32)
    assert (p.left, p.right) == (8, 8)
    out, p = letterbox(np.zeros((7, 10, 3), np.uint8), (16, 16))
    assert p.new_hw == (11, 16) and (p.top, p.bottom) == (2, 3)


def test_seg_labels_resize_then_argmax():
    logits = torch.zeros(3, 4, 4)
    logits[1, :, :2] = 5.0
    logits[2, :, 2:] = 5.0
    labels = seg_labels(logits, (8, 6))
    assert labels.shape == (8, 6) and labels.dtype == np.uint8
    assert set(np.unique(labels[:, :2])) == {1} and set(np.unique(labels[:, -2:])) == {2}


def test_seg_labels_equal_torch_argmax_with_ties():
    """The fast channel maximum returns argmax's index, the first one on ties."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (29, 24, 18), generator=g).float()  # many exact ties
    want = F.interpolate(logits[None], size=(50, 37), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(seg_labels(logits, (50, 37)), want[0].argmax(0).numpy())
    np.testing.assert_array_equal(seg_labels(logits, (24, 18)), logits.argmax(0).numpy())


def test_normal_map_unit_and_padding_removed():
    img = np.zeros((20, 40, 3), np.uint8)
    _, p = letterbox(img, (32, 32))  # resized to 16x32, 8 rows of padding above and below
    raw = torch.zeros(3, 32, 32)
    raw[2] = -3.0  # facing the camera, length 3
    raw[:, : p.top] = torch.tensor([100.0, 0, 0])[:, None, None]  # garbage in the padding
    n = normal_map(raw, p)
    assert n.shape == (20, 40, 3) and n.dtype == np.float32
    np.testing.assert_allclose(n, np.broadcast_to([0, 0, -1], n.shape), atol=1e-6)


def test_metric_pointmap_divides_by_scale_and_unletterboxes():
    _, p = letterbox(np.zeros((16, 8, 3), np.uint8), (16, 16))
    canonical = torch.zeros(3, 16, 16)
    canonical[2] = 2.0
    canonical[0] = torch.arange(16.0)[None, :]
    pts = metric_pointmap(canonical, 0.5, p)
    assert pts.shape == (16, 8, 3)
    np.testing.assert_allclose(pts[..., 2], 4.0)
    np.testing.assert_allclose(pts[0, :, 0], (np.arange(8) + p.left) / 0.5)
    with pytest.raises(ValueError, match="scale"):
        metric_pointmap(canonical, 0.0, p)


def test_albedo_clamped():
    _, p = letterbox(np.zeros((8, 8, 3), np.uint8), (8, 8))
    raw = torch.tensor([-1.0, 0.5, 3.0])[:, None, None].expand(3, 8, 8)
    out = albedo_map(raw, p)
    np.testing.assert_allclose(out[0, 0], [0, 0.5, 1])


def test_dense_predictor_end_to_end_with_known_outputs_and_masks():
    maps = torch.zeros(3, 32, 32)
    maps[2] = 5.0
    model = ConstantDenseModel("pointmap", maps, scale=2.0, input_size=(32, 32))
    pred = Predictor("pointmap", model, batch_size=2)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    res = pred.predict(imgs, masks=[mask, None, None])
    assert len(res) == 3 and len(model.seen) == 2  # batches of 2 + 1
    np.testing.assert_allclose(res[0].depth, 2.5)
    assert res[0].scale == 2.0 and res[0].mask is not None and res[0].mask.sum() == 25
    assert res[1].mask is None
    # the network saw the letterboxed, normalised image
    letterboxed, _ = letterbox(imgs[0], (32, 32))
    torch.testing.assert_close(model.seen[0][0], to_tensor([letterboxed])[0])
    with pytest.raises(ValueError, match="mask 0 has shape"):
        pred.predict(imgs[:1], masks=[np.ones((3, 3), bool)])


def test_mask_model_masks_dense_outputs():
    seg_logits = torch.zeros(29, 16, 16)
    seg_logits[4, 4:12, 4:12] = 10.0  # hair in the middle
    seg = ConstantDenseModel("seg", seg_logits)
    normal = ConstantDenseModel("normal", torch.ones(3, 16, 16))
    pred = Predictor("normal", normal, input_size=(16, 16), mask_model=seg)
    res = pred.predict(np.zeros((16, 16, 3), np.uint8))
    assert res.mask is not None and res.mask.dtype == bool
    assert res.mask[8, 8] and not res.mask[0, 0] and res.mask.sum() == 64
    np.testing.assert_allclose(np.linalg.norm(res.normals, axis=-1), 1, atol=1e-6)


def test_unletterbox_numpy_and_channels_last():
    _, p = letterbox(np.zeros((10, 20, 3), np.uint8), (20, 20))
    arr = np.arange(20 * 20 * 2).reshape(20, 20, 2)
    assert unletterbox(arr, p, channels_last=True).shape == (10, 20, 2)
    assert unletterbox(arr.transpose(2, 0, 1), p).shape == (2, 10, 20)
