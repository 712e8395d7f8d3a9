"""Pictures and the PLY writer."""

from __future__ import annotations

import numpy as np
import pytest

from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.inference.ply import read_ply, write_ply
from sapiens2.viz import (
    DepthRange,
    albedo_to_rgb,
    depth_to_rgb,
    draw_pose,
    normals_to_rgb,
    seg_legend,
    seg_overlay,
    seg_picture,
    seg_to_rgb,
    side_by_side,
)
from sapiens2.viz.layout import fit_into


def test_draw_pose_uses_metadata_colours_and_threshold():
    meta = keypoints308()
    img = np.zeros((100, 100, 3), np.uint8)
    kp = np.full((1, 308, 2), 50.0)
    sc = np.zeros((1, 308))
    nose, left_eye = meta.index("nose"), meta.index("left_eye")
    kp[0, nose] = (20, 20)
    kp[0, left_eye] = (80, 80)
    sc[0, nose] = 0.9
    sc[0, left_eye] = 0.2  # below the threshold: not drawn, nor its link
    out = draw_pose(img, kp, sc, kpt_thr=0.3, radius=3)
    assert out[20, 20].tolist() == meta.colors[nose].tolist()
    assert out[80, 80].tolist() == [0, 0, 0] and out[50, 50].tolist() == [0, 0, 0]
    assert img.max() == 0  # input untouched
    sc[0, left_eye] = 0.9
    out = draw_pose(img, kp, sc, kpt_thr=0.3, radius=3, thickness=1)
    link = next(i for i, (a, b) in enumerate(meta.skeleton.tolist()) if {a, b} == {nose, left_eye})
    assert out[50, 50].tolist() == meta.link_colors[link].tolist()


def test_seg_colours_overlay_and_legend():
    meta = seg29()
    labels = np.zeros((30, 40), np.uint8)
    labels[:, 20:] = 4
    rgb = seg_to_rgb(labels)
    assert (
        rgb[0, 0].tolist() == meta.palette[0].tolist()
        and rgb[0, 30].tolist() == meta.palette[4].tolist()
    )
    img = np.full((30, 40, 3), 100, np.uint8)
    over = seg_overlay(img, labels)
    np.testing.assert_array_equal(
        over[0, 30], np.rint(0.5 * 100 + 0.5 * meta.palette[4].astype(float))
    )
    rng = np.random.default_rng(0)  # the fast paths equal the plain formulas exactly
    ids = rng.integers(0, 40, (64, 48)).astype(np.uint8)
    photo = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    palette[: meta.num_classes] = meta.palette
    np.testing.assert_array_equal(seg_to_rgb(ids), palette[ids])
    mixed = 0.5 * photo.astype(np.float32) + 0.5 * palette[ids].astype(np.float32)
    np.testing.assert_array_equal(seg_overlay(photo, ids), np.rint(mixed).astype(np.uint8))
    legend = seg_legend(labels, 30)
    assert legend.shape[0] == 30 and legend.shape[1] > 20
    # one row: the hair swatch (the background class is not listed)
    assert legend[10, 10].tolist() == meta.palette[4].tolist()
    two = seg_legend(np.array([[0, 4], [9, 9]], np.uint8), 60)
    assert (
        two[10, 10].tolist() == meta.palette[4].tolist()
        and two[40, 10].tolist() == meta.palette[9].tolist()
    )


def test_fixed_seg_legend_has_one_size_for_any_classes():
    """Video frames need pictures of one size: the fixed legend's width depends on the height
    only, while the free one grows with the classes present (the cause of dropped video frames)."""
    meta = seg29()
    label_sets = [
        np.zeros((64, 48), np.uint8),  # background only
        np.full((64, 48), 4, np.uint8),
        np.arange(64 * 48).reshape(64, 48) % meta.num_classes,  # every class
    ]
    free = {seg_legend(labels, 64).shape for labels in label_sets}
    assert len(free) == 3  # the bug: three widths in one video
    fixed = {seg_legend(labels, 64, fixed=True).shape for labels in label_sets}
    assert len(fixed) == 1
    pictures = {seg_picture(np.zeros((64, 48, 3), np.uint8), labels, fixed_legend=True).shape
                for labels in label_sets}  # fmt: skip
    assert len(pictures) == 1
    hair = seg_legend(label_sets[1], 64, fixed=True)
    assert hair[6, 6].tolist() == meta.palette[4].tolist()  # the class present is listed first


def test_fit_into_keeps_the_aspect_ratio_centred_on_black():
    pic = np.full((10, 40, 3), 200, np.uint8)
    out = fit_into(pic, (20, 20))
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert (out[:7] == 0).all() and (out[8:12] == 200).all() and (out[13:] == 0).all()
    np.testing.assert_array_equal(fit_into(pic, (10, 40)), pic)


def test_normals_albedo_depth_pictures():
    n = np.zeros((4, 4, 3), np.float32)
    n[..., 0] = 1  # pointing right -> red
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    rgb = normals_to_rgb(n, mask)
    assert rgb[1, 1].tolist() == [255, 127, 127] and rgb[0, 0].tolist() == [0, 0, 0]
    alb = albedo_to_rgb(np.full((4, 4, 3), 0.5, np.float32), mask)
    assert alb[1, 1].tolist() == [127] * 3 and alb[0, 0].tolist() == [100] * 3

    depth = np.tile(np.linspace(1.0, 5.0, 50, dtype=np.float32), (10, 1))
    depth[0, 0] = -1  # invalid -> gray
    pic = depth_to_rgb(depth)
    assert pic[0, 0].tolist() == [100, 100, 100]
    near, far = pic[5, 1].astype(int), pic[5, -1].astype(int)
    assert near[0] > near[2] and far[2] > far[0]  # turbo: near red, far blue
    rng = DepthRange().update(depth).update(depth * 2)
    assert rng.near < 1.1 and rng.far > 9.5


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("mask_kind", [None, "bool", "uint8", "float", "signed"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf * 255 overflows, as it should
def test_dense_pictures_equal_the_whole_image_formulas(rows, mask_kind):
    """The row-blocked conversions give the official formulas' bytes: NaN/inf, masks, float64."""
    rng = np.random.default_rng(rows)
    n = rng.uniform(-1.3, 1.3, (rows, 7, 3)).astype(np.float32)
    n.flat[0], n.flat[-1], n.flat[len(n.flat) // 2] = np.nan, np.inf, -np.inf
    fg = rng.uniform(size=(rows, 7)) > 0.4
    mask = None if mask_kind is None else {"bool": fg, "uint8": fg * np.uint8(3), "float": fg * 0.5, "signed": fg * 2.0 - 1}[mask_kind]  # fmt: skip
    for normals in (n, n.astype(np.float64)):
        want = np.nan_to_num(normals.astype(np.float32))
        if mask is not None:
            want = np.where(mask[..., None] > 0, want, -1.0)
        want = np.clip((want + 1) * 0.5 * 255, 0, 255).astype(np.uint8)
        assert np.array_equal(normals_to_rgb(normals, mask), want)
    albedo = np.nan_to_num(n) * 0.6 + 0.5
    want = (np.clip(albedo, 0, 1) * 255).astype(np.uint8)
    if mask is not None:
        want[mask == 0] = 100
    assert np.array_equal(albedo_to_rgb(albedo, mask), want)


def test_side_by_side_and_ply_round_trip(tmp_path):
    a = np.zeros((10, 5, 3), np.uint8)
    b = np.full((20, 20, 3), 255, np.uint8)
    out = side_by_side(a, b)
    assert out.shape == (10, 15, 3) and out[:, 5:].min() == 255
    pts = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    cols = np.arange(21, dtype=np.uint8).reshape(7, 3)
    write_ply(tmp_path / "p.ply", pts, cols)
    p2, c2 = read_ply(tmp_path / "p.ply")
    np.testing.assert_array_equal(p2, pts)
    np.testing.assert_array_equal(c2, cols)
    header = (tmp_path / "p.ply").read_bytes()[:200]
    assert b"element vertex 7" in header and b"binary_little_endian" in header


def test_depth_colorbar_matches_the_depth_colours():
    from sapiens2.viz import DepthRange, depth_colorbar, depth_to_rgb

    bounds = DepthRange(near=1.5, far=6.0)
    bar = depth_colorbar(bounds, 400, 48)
    assert bar.shape == (48, 400, 3) and bar.dtype == np.uint8
    # the bar's ends are the colours of the nearest and farthest depth
    near, far = depth_to_rgb(np.array([[1.5, 6.0]], np.float32), bounds=bounds)[0]
    np.testing.assert_allclose(bar[5, 12], near, atol=12)
    np.testing.assert_allclose(bar[5, 400 - 13], far, atol=12)
    assert (bar[-10:] < 128).any()  # tick labels are drawn under the bar
    with pytest.raises(ValueError, match="empty"):
        depth_colorbar(DepthRange())
