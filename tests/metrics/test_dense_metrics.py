"""Dense metrics against straightforward independent numpy computations on random inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sapiens2.metrics import (
    AlbedoMetric,
    NormalMetric,
    PointmapMetric,
    SegmentationMetric,
    least_squares_scale,
    masked_ssim,
    masked_ssim_map,
)
from sapiens2.metrics._dense import histogram_median

# ---------------------------------------------------------------------------------- segmentation


def _seg_reference(preds, targets, c, ignore=255):
    inter, lab, prd = np.zeros(c), np.zeros(c), np.zeros(c)
    for p, t in zip(preds, targets, strict=True):
        for k in range(c):
            v = t != ignore
            inter[k] += np.sum((p == k) & (t == k) & v)
            lab[k] += np.sum((t == k) & v)
            prd[k] += np.sum((p == k) & v)
    union = lab + prd - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = inter / union, inter / lab
    return inter.sum() / lab.sum() * 100, iou, acc


def test_segmentation_matches_reference_and_logits_path():
    rng = np.random.default_rng(0)
    c = 7
    preds, targets = [], []
    metric = SegmentationMetric(num_classes=c, class_names=[f"k{i}" for i in range(c)])
    for _ in range(3):
        t = rng.integers(0, c - 1, (2, 20, 16))  # class 6 never appears in targets ...
        t[rng.uniform(size=t.shape) < 0.1] = 255
        logits = rng.normal(size=(2, c - 1, 20, 16)).astype(np.float32)  # ... nor in predictions
        logits = np.concatenate([logits, np.full((2, 1, 20, 16), -9.0, np.float32)], 1)
        p = logits.argmax(1)
        metric.update(torch.from_numpy(logits), t)
        preds += list(p)
        targets += list(t)
    out = metric.compute()
    a_acc, iou, acc = _seg_reference(preds, targets, c)
    assert np.isnan(iou[6]) and np.isnan(acc[6])
    assert out["aAcc"] == pytest.approx(a_acc, abs=1e-12)
    assert out["mIoU"] == pytest.approx(np.nan_to_num(iou).mean() * 100, abs=1e-12)
    assert out["mAcc"] == pytest.approx(np.nan_to_num(acc).mean() * 100, abs=1e-12)
    assert out["per_class"]["k3"]["IoU"] == pytest.approx(iou[3] * 100, abs=1e-12)
    assert out["per_class"]["k6"] == {"IoU": 0.0, "Acc": 0.0}
    skip = SegmentationMetric(num_classes=c, nan_to_num=None)
    skip.update(np.stack(preds), np.stack(targets))
    assert skip.compute()["mIoU"] == pytest.approx(np.nanmean(iou) * 100, abs=1e-12)
    assert "| k3 |" in metric.table()


def test_segmentation_resizes_logits_to_target_size():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(1, 5, 8, 6)))
    target = rng.integers(0, 5, (1, 16, 12))
    metric = SegmentationMetric(num_classes=5)
    metric.update(logits, target)
    up = (
        torch.nn.functional.interpolate(logits, size=(16, 12), mode="bilinear", align_corners=False)
        .argmax(1)
        .numpy()
    )
    assert metric.compute()["aAcc"] == pytest.approx((up == target).mean() * 100)


def test_segmentation_bad_labels():
    metric = SegmentationMetric(num_classes=4)
    with pytest.raises(ValueError, match="target label 9"):
        metric.update(np.zeros((3, 3), np.int64), np.full((3, 3), 9))
    with pytest.raises(ValueError, match="shape"):
        metric.update(np.zeros((3, 4), np.int64), np.zeros((3, 3), np.int64))


# ----------------------------------------------------------------------------------------- normal


def _unit(v, axis):
    return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), 1e-6)


def _angles(p, g, axis=0):
    return np.degrees(np.arccos(np.clip(np.sum(_unit(p, axis) * _unit(g, axis), axis), -1, 1)))


def test_normal_metric_matches_reference():
    rng = np.random.default_rng(2)
    metric = NormalMetric()
    all_err = []
    for _ in range(3):
        g = _unit(rng.normal(size=(2, 3, 12, 10)), 1)
        p = g + rng.normal(scale=0.3, size=g.shape)  # not unit: the metric normalises
        m = rng.uniform(size=(2, 12, 10)) < 0.7
        metric.update(torch.from_numpy(p), g, m)
        all_err.append(_angles(p, g, 1)[m])
    e = np.concatenate(all_err)
    out = metric.compute()
    assert out["num_pixels"] == e.size
    assert out["mean"] == pytest.approx(e.mean(), abs=1e-10)
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)), abs=1e-10)
    assert out["median"] == pytest.approx(np.median(e), abs=1e-4)  # float32 storage
    for t in (5, 11.25, 22.5, 30):
        assert out[f"within_{t:g}"] == pytest.approx(100 * np.mean(e < t), abs=1e-12)
    hist = NormalMetric(exact_median=False)
    hist.update(torch.from_numpy(p), g, m)
    e_last = all_err[-1]
    assert abs(hist.compute()["median"] - np.median(e_last)) <= 0.001


def test_histogram_median_within_one_bin():
    rng = np.random.default_rng(3)
    w = 0.01
    for n in (1, 2, 11, 500, 10001):
        v = rng.gamma(2.0, 5.0, n)
        hist = np.bincount(np.floor(v / w).astype(int))
        assert abs(histogram_median(hist, w) - np.median(v)) < w


def test_normal_metric_resizes_and_counts_empty_samples():
    g = np.zeros((2, 3, 8, 8))
    g[:, 2] = -1
    p = torch.zeros(2, 3, 4, 4)
    p[:, 2] = -1
    mask = np.ones((2, 8, 8), bool)
    mask[1] = False
    metric = NormalMetric()
    metric.update(p, g, mask)
    out = metric.compute()
    assert (
        out["num_pixels"] == 64
        and out["num_empty"] == 1
        and out["mean"] == pytest.approx(0.0, abs=1e-6)
    )


# --------------------------------------------------------------------------------------- pointmap


def _ref_normals(pm):  # pm (H, W, 3) -> normals via OpenCV's 5x5 Sobel, zero padding
    def sobel(c, dx, dy):
        return cv2.Sobel(pm[..., c], cv2.CV_64F, dx, dy, ksize=5, borderType=cv2.BORDER_CONSTANT)

    gx = np.stack([sobel(c, 1, 0) for c in range(3)], -1)
    gy = np.stack([sobel(c, 0, 1) for c in range(3)], -1)
    return np.cross(gx, gy)


@pytest.mark.parametrize("full_window", [False, True])
def test_pointmap_metric_matches_reference(full_window):
    # full_window=False (default): every valid pixel, as official; True: the deviation that keeps
    # only pixels whose 5x5 window is valid. The masks touch the left and bottom image borders.
    rng = np.random.default_rng(4)
    h, w = 16, 14
    yy, xx = np.mgrid[0:h, 0:w] / 10.0
    metric = PointmapMetric(normal_full_window=full_window)
    d_all, da_all, diff_all, nerr_all, scales, rel_all, rela_all = [], [], [], [], [], [], []
    for _ in range(3):
        z = 2 + 0.3 * np.sin(xx * 3) + 0.2 * yy**2 + rng.uniform(0, 1)
        g = np.stack([xx * z, yy * z, z], 0)[None]
        p = g * rng.uniform(0.8, 1.2) + rng.normal(scale=0.02, size=g.shape)
        m = np.ones((1, h, w), bool)
        m[0, : rng.integers(1, 4)] = False
        m[0, :, -rng.integers(1, 3) :] = False
        metric.update(torch.from_numpy(p), torch.from_numpy(g), m)
        pv, gv = p[0].transpose(1, 2, 0)[m[0]], g[0].transpose(1, 2, 0)[m[0]]
        diff_all.append(pv - gv)
        d_all.append(np.linalg.norm(pv - gv, axis=1))
        s = np.sum(pv * gv) / np.sum(pv * pv)
        scales.append(s)
        da_all.append(np.linalg.norm(s * pv - gv, axis=1))
        rel_all.append(np.abs(pv[:, 2] - gv[:, 2]) / gv[:, 2])
        rela_all.append(np.abs(s * pv[:, 2] - gv[:, 2]) / gv[:, 2])
        full = cv2.erode(
            m[0].astype(np.uint8),
            np.ones((5, 5), np.uint8),
            borderType=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        scored = full > 0 if full_window else m[0]
        gz = np.where(m[0][..., None], g[0].transpose(1, 2, 0), 0)
        nerr_all.append(
            _angles(_ref_normals(p[0].transpose(1, 2, 0)), _ref_normals(gz), -1)[scored]
        )
    d, da, diff, ne = (np.concatenate(x) for x in (d_all, da_all, diff_all, nerr_all))
    out = metric.compute()
    assert out["num_pixels"] == d.size and out["num_normal_pixels"] == ne.size > 0
    assert (ne.size < d.size) if full_window else (ne.size == d.size)
    assert out["l2_mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean(d**2)), abs=1e-12)
    for i, ax in enumerate("xyz"):
        assert out[f"{ax}_mae"] == pytest.approx(np.abs(diff[:, i]).mean(), abs=1e-12)
    for t in (0.05, 0.1, 0.2):
        assert out[f"within_{t:g}"] == pytest.approx(np.mean(d < t), abs=1e-12)
        assert out[f"aligned_within_{t:g}"] == pytest.approx(np.mean(da < t), abs=1e-12)
    assert out["aligned_l2_mean"] == pytest.approx(da.mean(), abs=1e-12)
    assert out["aligned_rmse"] <= out["rmse"]
    assert out["aligned_scale_mean"] == pytest.approx(np.mean(scales), abs=1e-12)
    rel, rel_aligned = np.concatenate(rel_all), np.concatenate(rela_all)
    assert out["depth_abs_rel"] == pytest.approx(rel.mean(), abs=1e-12) and rel.mean() > 0.01
    assert out["aligned_depth_abs_rel"] == pytest.approx(rel_aligned.mean(), abs=1e-12)
    assert out["normal_mean"] == pytest.approx(ne.mean(), abs=1e-8)
    assert out["normal_rmse"] == pytest.approx(np.sqrt(np.mean(ne**2)), abs=1e-8)
    for t in (5, 11.25, 22.5, 30):
        assert out[f"normal_within_{t:g}"] == pytest.approx(np.mean(ne < t), abs=1e-12)


def test_pointmap_normals_official_default_by_hand_written_sobel():
    # The official rule on a 6x5 example: both full pointmaps (the target 0 outside the mask, the
    # prediction as it is) through the 5x5 Sobel kernels written out by hand, zero padding at the
    # image border, cross product, angle at every valid pixel; float64 loops, no cv2 / torch.
    kx = np.array(
        [
            [-1, -2, 0, 2, 1],
            [-4, -8, 0, 8, 4],
            [-6, -12, 0, 12, 6],
            [-4, -8, 0, 8, 4],
            [-1, -2, 0, 2, 1],
        ],
        np.float64,
    )
    ky = kx.T
    rng = np.random.default_rng(11)
    h, w = 6, 5
    g = rng.uniform(1, 3, size=(3, h, w))
    p = g + rng.normal(scale=0.3, size=g.shape)
    m = np.ones((h, w), bool)
    m[0, :2] = m[4:, 3:] = m[2, 2] = False
    gz = np.where(m, g, 0.0)

    def normals(pm):
        padded = np.pad(pm, ((0, 0), (2, 2), (2, 2)))
        n = np.zeros((h, w, 3))
        for i in range(h):
            for j in range(w):
                win = padded[:, i : i + 5, j : j + 5]
                dx = np.array([np.sum(kx * win[c]) for c in range(3)])
                dy = np.array([np.sum(ky * win[c]) for c in range(3)])
                n[i, j] = np.cross(dx, dy)
        return n

    theta = _angles(normals(p), normals(gz), -1)[m]
    metric = PointmapMetric(scale_aligned=False)
    metric.update(p, g, m)
    out = metric.compute()
    assert out["num_normal_pixels"] == out["num_pixels"] == m.sum() == theta.size
    assert out["normal_mean"] == pytest.approx(theta.mean(), abs=1e-9)
    assert out["normal_rmse"] == pytest.approx(np.sqrt(np.mean(theta**2)), abs=1e-9)
    for t in (5, 11.25, 22.5, 30):
        assert out[f"normal_within_{t:g}"] == pytest.approx(np.mean(theta < t), abs=1e-12)
    # no pixel of this 6x5 image has a whole valid 5x5 window
    interior = PointmapMetric(scale_aligned=False, normal_full_window=True)
    interior.update(p, g, m)
    assert interior.compute()["num_normal_pixels"] == 0


def test_pointmap_normal_full_window_option_on_a_plane():
    # A plane z = 2 + 0.1 x + 0.2 y seen by a pinhole; the prediction is the plane everywhere,
    # the target is the plane on a rectangle inside the image and 0 around it. Inside the
    # rectangle the two agree exactly, so only windows reaching the zeros differ.
    h, w = 14, 14
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = (xx - 6.5) / 10, (yy - 6.5) / 10
    z = 2 / (1 - 0.1 * u - 0.2 * v)  # the ray (u, v, 1)·z meets the plane
    plane = np.stack([u * z, v * z, z])
    m = np.zeros((h, w), bool)
    m[3:10, 2:11] = True  # 7 x 9 pixels, at least 2 from the image border
    official = PointmapMetric(scale_aligned=False)
    interior = PointmapMetric(scale_aligned=False, normal_full_window=True)
    for metric in (official, interior):
        metric.update(plane, np.where(m, plane, 0.0), m)
    a, b = official.compute(), interior.compute()
    assert a["num_pixels"] == b["num_pixels"] == 63
    assert a["l2_mean"] == b["l2_mean"] == 0.0
    # official: all 63 valid pixels, the 48 within 2 pixels of the mask edge see the zeros
    assert a["num_normal_pixels"] == 63
    assert a["normal_mean"] > 10 and a["normal_within_5"] == pytest.approx(15 / 63)
    # the option: only the 3 x 5 pixels whose 5x5 window is inside the mask, all exact
    assert b["num_normal_pixels"] == 15
    assert b["normal_mean"] == pytest.approx(0.0, abs=1e-5) and b["normal_within_5"] == 1.0


def test_pointmap_normal_full_window_reaches_the_metric_from_evaluation():
    from sapiens2.evaluation import adapter_for

    assert adapter_for("pointmap").metric(None, "val").normal_full_window is False
    adapter = adapter_for("pointmap", pointmap_normal_full_window=True)
    assert adapter.metric(None, "val").normal_full_window is True


def test_least_squares_scale_is_optimal_and_recovers_scaled_predictions():
    rng = np.random.default_rng(5)
    g = torch.from_numpy(rng.normal(size=(2, 3, 6, 5)))
    p = torch.from_numpy(rng.normal(size=(2, 3, 6, 5)))
    m = torch.from_numpy(rng.uniform(size=(2, 6, 5)) < 0.8)
    s = least_squares_scale(p, g, m)
    for b in range(2):

        def cost(k, b=b):
            return float((((k * p[b] - g[b]) ** 2).sum(0) * m[b]).sum())

        assert cost(float(s[b])) <= min(cost(float(s[b]) * 1.001), cost(float(s[b]) * 0.999))
    metric = PointmapMetric(normals=False)
    metric.update(g * 0.37, g, m)
    out = metric.compute()
    assert out["aligned_l2_mean"] == pytest.approx(0.0, abs=1e-12) and out["l2_mean"] > 0.1


# ----------------------------------------------------------------------------------------- albedo


def test_masked_ssim_full_mask_matches_skimage():
    from scipy.ndimage import gaussian_filter
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(6)
    g = gaussian_filter(rng.uniform(size=(3, 96, 72)), (0, 2, 2))
    g = (g - g.min()) / (g.max() - g.min())
    p = np.clip(g + rng.normal(scale=0.05, size=g.shape), 0, 1)
    ref, ref_map = structural_similarity(
        p,
        g,
        channel_axis=0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        full=True,
    )
    ours_map, valid = masked_ssim_map(
        torch.from_numpy(p)[None],
        torch.from_numpy(g)[None],
        torch.ones(1, 96, 72, dtype=torch.bool),
        1.0,
    )
    # identical away from the border (5 px: the window radius), where only the padding differs
    np.testing.assert_allclose(
        ours_map[0, 5:-5, 5:-5].numpy(), ref_map.mean(0)[5:-5, 5:-5], atol=1e-10
    )
    # whole-image means differ only by the border handling (zero padding + mask normalisation
    # and all windows with blurred mask > 0.5 here; reflect padding and a 5 px crop in skimage)
    assert float(masked_ssim(p, g, data_range=1.0)[0]) == pytest.approx(ref, abs=0.01)
    assert bool(valid[0, 5:-5, 5:-5].all())
    # the automatic data range: uint8-scaled inputs give the same SSIM
    assert float(masked_ssim(p * 255, g * 255)[0]) == pytest.approx(
        float(masked_ssim(p, g)[0]), abs=1e-10
    )


def _ref_masked_ssim(p, g, m, r):  # straightforward per-pixel loops over the 11x11 window
    k1 = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    k = np.outer(k1, k1) / k1.sum() ** 2
    c, h, w = p.shape
    mp = np.pad(m.astype(float), 5)
    pp, gp = np.pad(p, ((0, 0), (5, 5), (5, 5))), np.pad(g, ((0, 0), (5, 5), (5, 5)))
    vals = []
    for i in range(h):
        for j in range(w):
            wk = k * mp[i : i + 11, j : j + 11]
            ws = wk.sum()
            if ws <= 0.5:
                continue
            s = []
            for ch in range(c):
                x, y = pp[ch, i : i + 11, j : j + 11], gp[ch, i : i + 11, j : j + 11]
                mx, my = (wk * x).sum() / ws, (wk * y).sum() / ws
                vx = (wk * x * x).sum() / ws - mx**2
                vy = (wk * y * y).sum() / ws - my**2
                cxy = (wk * x * y).sum() / ws - mx * my
                c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
                s.append(
                    (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                )
            vals.append(np.mean(s))
    return np.mean(vals)


def test_albedo_metric_matches_reference():
    rng = np.random.default_rng(7)
    metric = AlbedoMetric()
    abs_px, sq_px, grads, psnrs, ssims = [], [], [], [], []
    for b in range(3):
        g = rng.uniform(size=(3, 14, 12))
        p = np.clip(g + rng.normal(scale=0.1, size=g.shape), 0, 1)
        m = np.zeros((14, 12), bool)
        m[2:12, 1 : 9 + b] = True
        m[5, 4] = False
        scale = 255.0 if b == 1 else 1.0  # one uint8-range sample: errors are range-normalised
        metric.update(torch.from_numpy(p * scale)[None], torch.from_numpy(g * scale)[None], m[None])
        e = p - g
        abs_px.append(np.abs(e).mean(0)[m])
        sq_px.append((e**2).mean(0)[m])
        psnrs.append(10 * np.log10(1 / (e**2).mean(0)[m].mean()))
        for ax in (1, 2):
            dp, dg = np.diff(p, axis=ax), np.diff(g, axis=ax)
            mv = m[1:, :] & m[:-1, :] if ax == 1 else m[:, 1:] & m[:, :-1]
            grads.append(np.abs(dp - dg).mean(0)[mv])
        ssims.append(_ref_masked_ssim(p, g, m, 1.0))
    out = metric.compute()
    assert out["mae"] == pytest.approx(np.concatenate(abs_px).mean(), abs=1e-12)
    assert out["rmse"] == pytest.approx(np.sqrt(np.concatenate(sq_px).mean()), abs=1e-12)
    assert out["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert out["grad_l1"] == pytest.approx(np.concatenate(grads).mean(), abs=1e-12)
    assert out["ssim"] == pytest.approx(np.mean(ssims), abs=1e-9)
    assert out["num_samples"] == 3


def test_dense_shape_errors():
    with pytest.raises(ValueError, match=r"pred has shape \(2, 4, 4\)"):
        NormalMetric().update(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="mask has shape"):
        AlbedoMetric().update(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), np.ones((5, 4), bool))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        PointmapMetric().update([[0.0]], np.zeros((3, 4, 4)))
