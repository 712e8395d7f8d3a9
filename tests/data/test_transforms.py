"""Transforms keep every label consistent with the image; flips are involutions; UDP targets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sapiens2.data import geometry
from sapiens2.data import transforms as T
from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.data.udp import udp_encode

from ._dataset_factory import make_keypoints, make_sample


def full_sample(seed: int = 0, h: int = 40, w: int = 30) -> T.Sample:
    rng = np.random.default_rng(seed)
    s = make_sample(rng, h, w)
    kp = make_keypoints(rng, h, w)
    return T.Sample(
        image=s["image"],
        mask=s["mask"],
        seg=s["seg"],
        normal=s["normal"],
        pointmap=s["pointmap"],
        K=s["K"],
        albedo=s["albedo"],
        keypoints=kp[:, :2].astype(np.float64),
        keypoints_visible=(kp[:, 2] > 0).astype(np.float32),
        bbox=np.array([3.0, 4.0, 20.5, 30.0]),
        center=np.array([11.75, 17.0]),
        key="x",
    )


FIELDS = (
    "image",
    "mask",
    "seg",
    "normal",
    "pointmap",
    "K",
    "albedo",
    "keypoints",
    "keypoints_visible",
    "bbox",
    "center",
)


def assert_same(a: T.Sample, b: T.Sample) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def blob(h: int, w: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat((g * 250).astype(np.uint8)[..., None], 3, axis=2)


def centroid(img: np.ndarray) -> np.ndarray:
    g = img[..., 0].astype(np.float64)
    g = np.where(g > 0.05 * g.max(), g, 0)
    yy, xx = np.mgrid[0 : g.shape[0], 0 : g.shape[1]]
    return np.array([(g * xx).sum() / g.sum(), (g * yy).sum() / g.sum()])


def project(pm: np.ndarray, K: np.ndarray) -> np.ndarray:
    return np.stack(
        [K[0, 0] * pm[..., 0] / pm[..., 2] + K[0, 2], K[1, 1] * pm[..., 1] / pm[..., 2] + K[1, 2]],
        -1,
    )


def assert_pointmap_on_grid(s: T.Sample, tol: float) -> None:
    """Projecting each foreground pointmap pixel with K lands on (near) that pixel."""
    valid = s.mask > 0
    assert valid.sum() > 20
    uv = project(s.pointmap[valid], s.K)
    vv, uu = np.nonzero(valid)
    err = np.abs(uv - np.stack([uu, vv], -1)).max()
    assert err <= tol, err


# -------------------------------------------------------------------------------------------- flips


def test_flip_twice_is_identity():
    s = full_sample()
    flip = T.HorizontalFlip(p=1.0)
    once = flip(s, np.random.default_rng(0))
    assert not np.array_equal(once.image, s.image)
    assert_same(flip(once, np.random.default_rng(0)), s)


def test_flip_swaps_left_right_consistently():
    s = full_sample()
    f = T.HorizontalFlip(p=1.0).apply(s)
    w = s.hw[1]
    # part labels: mirrored position, left/right classes swapped, others unchanged
    lut = seg29().flip_lut()
    np.testing.assert_array_equal(f.seg, lut[s.seg[:, ::-1]])
    assert (f.seg == 15).sum() == (s.seg == 6).sum() and (f.seg == 6).sum() == (s.seg == 15).sum()
    # keypoints: the new left eye is the mirrored old right eye
    meta = keypoints308()
    le, re = meta.index("left_eye"), meta.index("right_eye")
    np.testing.assert_allclose(f.keypoints[le], [w - 1 - s.keypoints[re, 0], s.keypoints[re, 1]])
    assert f.keypoints_visible[le] == s.keypoints_visible[re]
    # normals: x negated at the mirrored pixel
    np.testing.assert_array_equal(f.normal[5, w - 1 - 7], s.normal[5, 7] * [-1, 1, 1])
    # pointmap + intrinsics: still projects onto its own pixel
    assert_pointmap_on_grid(s, 1e-3)
    assert_pointmap_on_grid(f, 1e-3)
    assert f.K[0, 2] == pytest.approx(w - 1 - s.K[0, 2])
    # bbox
    np.testing.assert_allclose(f.bbox, [w - 1 - 20.5, 4.0, w - 1 - 3.0, 30.0])


def test_flip_with_user_classes_and_bad_pairs():
    s = full_sample()
    f = T.HorizontalFlip(p=1.0, seg_flip_pairs=[[3, 6]]).apply(s)
    assert (f.seg == 6).sum() == (s.seg == 3).sum()
    with pytest.raises(ValueError, match="overlap"):
        T.HorizontalFlip(seg_flip_pairs=[[1, 2], [2, 3]])
    with pytest.raises(ValueError, match="involution"):
        T.HorizontalFlip(flip_indices=[1, 2, 0])
    with pytest.raises(ValueError, match="flip_indices"):
        T.HorizontalFlip(p=1.0, flip_indices=[1, 0]).apply(s)


# ---------------------------------------------------------------------------------- dense geometry


@pytest.mark.parametrize("factor_range", [(0.5, 0.6), (1.6, 1.8)])
def test_random_scale_keeps_pointmap_and_intrinsics_consistent(factor_range):
    s = full_sample(1)
    out = T.RandomScale(p=1.0, scale_range=factor_range)(s, np.random.default_rng(3))
    r = out.hw[1] / s.hw[1]
    assert factor_range[0] - 0.05 <= r <= factor_range[1] + 0.05
    assert_pointmap_on_grid(out, max(r, 1.0) / 2 + 1e-6)
    assert out.mask.shape == out.seg.shape == out.hw and out.normal.shape[:2] == out.hw
    assert set(np.unique(out.seg)) <= set(np.unique(s.seg))


def test_random_crop_continuous_shifts_principal_point():
    s = full_sample(2)
    out = T.RandomCropContinuous(p=1.0, area_range=(0.5, 0.6))(s, np.random.default_rng(0))
    assert out.hw != s.hw
    assert_pointmap_on_grid(out, 1e-3)


def test_random_crop_fixed_pads_labels_with_ignore():
    s = full_sample(2)
    out = T.RandomCrop((50, 20), p=1.0)(s, np.random.default_rng(0))
    assert out.hw == (50, 20)
    assert (
        (out.seg[40:] == 255).all() and (out.image[40:] == 0).all() and (out.mask[40:] == 0).all()
    )


def test_letterbox_official_sizes_and_reprojection():
    p = geometry.letterbox_params((480, 640), (1024, 768))
    assert p.new_hw == (576, 768) and (p.top, p.bottom, p.left, p.right) == (224, 224, 0, 0)
    # a 3-D point projected with the letterboxed K lands where the letterbox moved its pixel
    h, w = 60, 80
    K = np.array([[70.0, 0, 41.3], [0, 72.0, 28.9], [0, 0, 1]])
    X = np.array([0.21, -0.13, 1.7])
    u, v = K[0, 0] * X[0] / X[2] + K[0, 2], K[1, 1] * X[1] / X[2] + K[1, 2]
    s = T.Sample(image=blob(h, w, u, v, sigma=3.0), K=K)
    out = T.Letterbox((64, 48))(s)
    K2 = out.K
    u2, v2 = K2[0, 0] * X[0] / X[2] + K2[0, 2], K2[1, 1] * X[1] / X[2] + K2[1, 2]
    np.testing.assert_allclose(
        out.meta["letterbox"].image_to_letterbox(np.array([u, v])), [u2, v2], atol=1e-9
    )
    np.testing.assert_allclose(centroid(out.image), [u2, v2], atol=0.15)


def test_letterbox_pointmap_on_grid():
    s = full_sample(3)
    out = T.Letterbox((64, 64))(s)
    assert out.hw == (64, 64)
    r = out.meta["letterbox"].factors[0]
    assert_pointmap_on_grid(out, r / 2 + 1e-6)
    lb = out.meta["letterbox"]
    assert (out.seg[: lb.top] == 255).all() and (out.mask[: lb.top] == 0).all()


def test_rotate_moves_keypoints_with_image_and_rotates_normals():
    h, w = 48, 40
    x, y = 28.3, 14.6
    s = T.Sample(
        image=blob(h, w, x, y),
        keypoints=np.array([[x, y]]),
        keypoints_visible=np.ones(1, np.float32),
        normal=np.tile(np.array([1.0, 0.0, 0.0], np.float32), (h, w, 1)),
    )
    out = T.RandomRotate(p=1.0).apply(s, 90.0)
    np.testing.assert_allclose(centroid(out.image), out.keypoints[0], atol=0.15)
    # image-right (+x) rotated 90 degrees counter-clockwise on screen points up (-y)
    np.testing.assert_allclose(out.normal[h // 2, w // 2], [0, -1, 0], atol=1e-6)
    with pytest.raises(ValueError, match="pointmap"):
        T.RandomRotate(p=1.0).apply(full_sample(), 10.0)


# ---------------------------------------------------------------------------------------- top-down


def test_udp_warp_matrix_maps_box_to_crop_corners():
    m = geometry.udp_warp_matrix(np.array([50.0, 60.0]), np.array([30.0, 40.0]), 0.0, (256, 192))
    pts = geometry.transform_points(np.array([[35.0, 40.0], [65.0, 80.0], [50.0, 60.0]]), m)
    np.testing.assert_allclose(pts, [[0, 0], [191, 255], [95.5, 127.5]], atol=1e-9)
    assert geometry.topdown_interpolation(np.array([300.0, 400.0]), (256, 192)) == cv2.INTER_AREA
    assert geometry.topdown_interpolation(np.array([30.0, 40.0]), (256, 192)) == cv2.INTER_CUBIC


def test_center_scale_and_aspect_fix():
    c, s = geometry.bbox_xyxy_to_center_scale(np.array([10.0, 20.0, 40.0, 60.0]))
    np.testing.assert_allclose(c, [25, 40])
    np.testing.assert_allclose(s, [37.5, 50])
    np.testing.assert_allclose(geometry.fix_aspect_ratio(s, 0.75), [37.5, 50])
    np.testing.assert_allclose(geometry.fix_aspect_ratio(np.array([60.0, 40.0]), 0.75), [60, 80])
    np.testing.assert_allclose(geometry.fix_aspect_ratio(np.array([10.0, 40.0]), 0.75), [30, 40])


@pytest.mark.parametrize(
    ("box", "rot"),
    [
        ((20.0, 10.0, 60.0, 90.0), 0.0),
        ((20.0, 10.0, 60.0, 90.0), 30.0),
        ((0.0, 0.0, 160.0, 120.0), -20.0),
    ],
)
def test_topdown_affine_keypoints_follow_the_image(box, rot):
    h, w = 120, 160
    x, y = 41.7, 52.2
    s = T.Sample(
        image=blob(h, w, x, y, sigma=3.0),
        keypoints=np.array([[x, y]]),
        keypoints_visible=np.ones(1, np.float32),
        bbox=np.array(box),
    )
    s = T.TopdownBoxFromBBox()(s)
    s = s.replace(rotation=rot)
    out = T.TopdownAffine((64, 48))(s)
    assert out.image.shape == (64, 48, 3)
    assert out.scale[0] / out.scale[1] == pytest.approx(0.75)
    np.testing.assert_allclose(centroid(out.image), out.keypoints[0], atol=0.35)


def test_topdown_affine_drops_keypoints_outside_crop():
    s = T.Sample(
        image=np.zeros((100, 100, 3), np.uint8),
        keypoints=np.array([[50.0, 50.0], [99.0, 2.0]]),
        keypoints_visible=np.ones(2, np.float32),
        center=np.array([50.0, 50.0]),
        scale=np.array([30.0, 40.0]),
    )
    out = T.TopdownAffine((64, 48))(s)
    np.testing.assert_array_equal(out.keypoints_visible, [1, 0])
    np.testing.assert_array_equal(out.keypoints[1], [0, 0])


def test_half_body_picks_upper_or_lower_box():
    meta = keypoints308()
    types = np.asarray(meta.types)
    kp = np.zeros((308, 2))
    vis = np.zeros(308, np.float32)
    upper = np.flatnonzero(types == "upper")[:10]
    lower = np.flatnonzero(types == "lower")[:6]
    kp[upper] = np.column_stack([np.linspace(10, 30, 10), np.linspace(10, 20, 10)])
    kp[lower] = np.column_stack([np.linspace(15, 25, 6), np.linspace(60, 90, 6)])
    vis[upper] = vis[lower] = 1
    s = T.Sample(
        image=np.zeros((100, 50, 3), np.uint8),
        keypoints=kp,
        keypoints_visible=vis,
        center=np.array([25.0, 50]),
        scale=np.array([50.0, 100]),
    )
    seen = set()
    for seed in range(20):
        out = T.RandomHalfBody(p=1.0)(s, np.random.default_rng(seed))
        seen.add(round(float(out.center[1]), 3))
    assert seen == {15.0, 75.0}
    np.testing.assert_allclose(
        T.RandomHalfBody(p=1.0, upper_prob=1.0)(s, np.random.default_rng(0)).scale, [30, 15]
    )


def test_bbox_transform_ranges():
    s = T.Sample(
        image=np.zeros((10, 10, 3), np.uint8),
        center=np.array([5.0, 5.0]),
        scale=np.array([10.0, 10.0]),
    )
    t = T.RandomBBoxTransform(shift_prob=1.0, rotate_prob=1.0)
    outs = [t(s, np.random.default_rng(i)) for i in range(200)]
    scales = np.array([o.scale[0] for o in outs])
    rots = np.array([o.rotation for o in outs])
    shifts = np.array([o.center - 5 for o in outs])
    assert scales.min() >= 5.0 and scales.max() <= 15.0 and scales.std() > 1
    assert np.abs(rots).max() <= 80 and np.abs(rots).max() > 40
    assert np.abs(shifts).max() <= 1.6 + 1e-9


# ------------------------------------------------------------------------------------- photometric

PHOTOMETRIC = [
    T.PhotoMetricDistortion(p=1.0),
    T.RandomGaussianBlur(p=1.0),
    T.RandomBoxBlur(p=1.0),
    T.RandomMedianBlur(p=1.0),
    T.RandomGaussianNoise(p=1.0),
    T.RandomCoarseDropout(p=1.0),
    T.RandomSolarize(p=1.0),
    T.RandomDownUpSample(p=1.0),
]


@pytest.mark.parametrize("t", PHOTOMETRIC, ids=lambda t: type(t).__name__)
def test_photometric_changes_only_the_image_and_is_seeded(t):
    s = full_sample(4)
    a = t(s, np.random.default_rng(7))
    b = t(s, np.random.default_rng(7))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.dtype == np.uint8 and a.image.shape == s.image.shape
    assert not np.array_equal(a.image, s.image)
    for f in FIELDS[1:]:
        np.testing.assert_array_equal(getattr(a, f), getattr(s, f), err_msg=f)
    # p = 0 is a no-op
    assert type(t)(p=0.0)(s, np.random.default_rng(7)) is s


def test_solarize_and_dropout_values():
    img = np.array([[[0, 127, 128], [200, 255, 10]]], np.uint8)
    out = T.RandomSolarize(p=1.0)(T.Sample(image=img), np.random.default_rng(0)).image
    np.testing.assert_array_equal(out, [[[0, 127, 127], [55, 0, 10]]])
    big = np.full((50, 40, 3), 200, np.uint8)
    d = T.RandomCoarseDropout(p=1.0, size_range=(0.2, 0.4))(
        T.Sample(image=big), np.random.default_rng(0)
    ).image
    frac = (d[..., 0] == 0).mean()
    assert 0.04 - 1e-9 <= frac <= 0.16 + 0.02


# --------------------------------------------------------------------------------------------- UDP


def test_udp_encode_peak_and_golden_values():
    in_hw, hm_hw, sigma = (1024, 768), (256, 192), 6.0
    kp_hm = np.array([[40.3, 100.8], [0.2, 3.0], [191.0, 255.0], [-30.0, 10.0], [60.0, 60.0]])
    factor = np.array([767 / 191, 1023 / 255])
    kp = kp_hm * factor
    vis = np.array([1, 1, 1, 1, 0], np.float32)
    hm, w = udp_encode(kp, vis, in_hw, hm_hw, sigma)
    assert hm.shape == (5, 256, 192) and hm.dtype == np.float32
    np.testing.assert_array_equal(w, [1, 1, 1, 0, 0])
    assert not hm[3].any() and not hm[4].any()
    yy, xx = np.mgrid[0:256, 0:192]
    for k in range(3):
        mu = (kp_hm[k] + 0.5).astype(int)
        window = (np.abs(xx - mu[0]) <= 18) & (np.abs(yy - mu[1]) <= 18)
        expect = (
            np.exp(-((xx - kp_hm[k, 0]) ** 2 + (yy - kp_hm[k, 1]) ** 2) / (2 * sigma**2)) * window
        )
        np.testing.assert_allclose(hm[k], expect, atol=2e-6)
    # argmax is the nearest pixel; a log-parabola through the neighbours recovers the sub-pixel peak
    y, x = np.unravel_index(hm[0].argmax(), hm[0].shape)
    assert (x, y) == (40, 101)
    lx = np.log(hm[0, y, x - 1 : x + 2].astype(np.float64))
    ly = np.log(hm[0, y - 1 : y + 2, x].astype(np.float64))
    dx = 0.5 * (lx[2] - lx[0]) / -(lx[2] - 2 * lx[1] + lx[0])
    dy = 0.5 * (ly[2] - ly[0]) / -(ly[2] - 2 * ly[1] + ly[0])
    np.testing.assert_allclose([x + dx, y + dy], kp_hm[0], atol=1e-3)
    assert hm[2, 255, 191] == pytest.approx(1.0)


def test_udp_encode_patch_missing_the_heatmap():
    # x = -19.6: mu = int(-19.1) = -19, the patch [-37, 0) misses the heatmap -> weight 0
    hm, w = udp_encode(np.array([[-19.6 * 767 / 191, 5.0]]), np.ones(1), (1024, 768), (256, 192))
    assert w[0] == 0 and not hm.any()
    # x = -18.7: mu = int(-18.2) = -18 (truncation), the patch reaches column 0
    hm, w = udp_encode(np.array([[-18.7 * 767 / 191, 5.0]]), np.ones(1), (1024, 768), (256, 192))
    assert w[0] == 1 and hm[0, :, 0].max() > 0


def test_generate_heatmaps_transform_checks_size():
    s = T.Sample(
        image=np.zeros((64, 48, 3), np.uint8),
        keypoints=np.array([[10.0, 20.0]]),
        keypoints_visible=np.ones(1, np.float32),
    )
    out = T.GenerateUDPHeatmaps((64, 48), sigma=2.0)(s)
    assert out.heatmaps.shape == (1, 16, 12)
    with pytest.raises(ValueError, match="expected"):
        T.GenerateUDPHeatmaps((128, 96))(s)


def test_compose_stops_on_drop():
    calls = []

    def drop(s, rng):
        calls.append(1)

    def never(s, rng):
        raise AssertionError

    assert T.Compose([drop, never])(full_sample(), np.random.default_rng(0)) is None
    assert calls == [1]


def test_resize_stretch_and_eval_mode():
    s = full_sample(5)
    out = T.Resize((80, 45))(s)
    assert out.hw == (80, 45) and out.seg.shape == (80, 45)
    assert set(np.unique(out.seg)) <= set(np.unique(s.seg))
    np.testing.assert_allclose(out.keypoints, (s.keypoints + 0.5) * [1.5, 2.0] - 0.5)
    # shrinking uses INTER_AREA, enlarging INTER_CUBIC (as the official seg test resize)
    np.testing.assert_array_equal(
        T.Resize((20, 15))(s).image, cv2.resize(s.image, (15, 20), interpolation=cv2.INTER_AREA)
    )
    np.testing.assert_array_equal(
        out.image, cv2.resize(s.image, (45, 80), interpolation=cv2.INTER_CUBIC)
    )
    ev = T.Resize((80, 45), labels=False)(s)
    assert ev.hw == (80, 45) and ev.seg is s.seg and ev.mask is s.mask
    np.testing.assert_allclose(ev.K, out.K)
