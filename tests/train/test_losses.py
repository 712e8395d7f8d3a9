"""Task losses against independent loop / numpy computations, plus their invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sapiens2.tasks import create_loss
from sapiens2.train.losses import (
    AlbedoLoss,
    NormalLoss,
    NormalLossWeights,
    PointmapLoss,
    PointmapLossWeights,
    PoseLoss,
    PoseLossWeights,
    SegLoss,
    SegLossWeights,
)
from sapiens2.train.losses.albedo import albedo_chromaticity_loss, albedo_grad_loss
from sapiens2.train.losses.common import dense_l1_loss
from sapiens2.train.losses.normal import normal_cosine_loss, normal_grad_loss
from sapiens2.train.losses.pointmap import (
    gt_mean_depth,
    intrinsics_consistency_loss,
    multiscale_l1_loss,
    pointmap_normal_loss,
    pointmap_normals,
    scale_l1_loss,
    shift_invariant_l1_loss,
    silog_loss,
)
from sapiens2.train.losses.pose import keypoint_mse_loss, keypoint_ohkm_mse_loss
from sapiens2.train.losses.seg import OFFICIAL_CLASS_WEIGHT, dice_loss, weighted_cross_entropy

D = torch.float64


def _close(a, b, tol=1e-9):
    a = float(a.detach()) if isinstance(a, torch.Tensor) else float(a)
    assert abs(a - b) <= tol * max(1.0, abs(b)), (a, b)


def _mask(b, h, w, p=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, 1, h, w, generator=g) < p
    m[:, :, 0, 0] = True
    return m


def _finite_grad(loss_fn, pred):
    pred = pred.clone().requires_grad_(True)
    out = loss_fn(pred)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert torch.isfinite(pred.grad).all()
    return out


def _sum_terms(out):
    return sum(v for k, v in out.items() if k != "loss")


# ------------------------------------------------------------------------------------------------
# Pose


def _pose_data(b=2, k=5, h=4, w=3):
    pred, gt = torch.randn(b, k, h, w, dtype=D), torch.rand(b, k, h, w, dtype=D)
    weights = (torch.rand(b, k) > 0.3).to(D)
    return pred, gt, weights


def _per_kpt_loop(pred, gt, weights):
    b, k, h, w = pred.shape
    out = np.zeros((b, k))
    for i in range(b):
        for j in range(k):
            s = 0.0
            for y in range(h):
                for x in range(w):
                    s += (float(pred[i, j, y, x]) - float(gt[i, j, y, x])) ** 2
            out[i, j] = float(weights[i, j]) * s / (h * w)
    return out


def test_keypoint_mse_matches_loop():
    pred, gt, weights = _pose_data()
    ref = 10 * _per_kpt_loop(pred, gt, weights).mean()
    _close(keypoint_mse_loss(pred, gt, weights), ref)
    out = PoseLoss()(pred, {"heatmaps": gt, "keypoint_weights": weights})
    assert set(out) == {"mse", "loss"}
    _close(out["loss"], ref)


def test_keypoint_ohkm_matches_loop_and_full_topk_is_mse():
    pred, gt, weights = _pose_data(k=6)
    per = _per_kpt_loop(pred, gt, weights)
    ref = 10 * np.mean([np.mean(sorted(row, reverse=True)[:3]) for row in per])
    _close(keypoint_ohkm_mse_loss(pred, gt, weights, topk=3), ref)
    out = PoseLoss(PoseLossWeights(ohkm_topk=3))(
        pred, {"heatmaps": gt, "keypoint_weights": weights}
    )
    assert set(out) == {"ohkm", "loss"}
    _close(out["loss"], ref)
    _close(
        keypoint_ohkm_mse_loss(pred, gt, weights, topk=6),
        float(keypoint_mse_loss(pred, gt, weights)),
    )
    with pytest.raises(ValueError, match="topk"):
        keypoint_ohkm_mse_loss(pred, gt, weights, topk=7)


def test_pose_zero_weight_keypoints_do_not_contribute_and_zero_at_target():
    pred, gt, weights = _pose_data()
    weights[0, 1] = 0
    pred2 = pred.clone()
    pred2[0, 1] += 100
    assert keypoint_mse_loss(pred, gt, weights) == keypoint_mse_loss(pred2, gt, weights)
    assert keypoint_mse_loss(gt, gt, weights) == 0
    _finite_grad(lambda p: PoseLoss()(p, {"heatmaps": gt, "keypoint_weights": weights}), pred)


def test_pose_bad_input_errors():
    pred, gt, weights = _pose_data()
    with pytest.raises(KeyError, match="keypoint_weights"):
        PoseLoss()(pred, {"heatmaps": gt})
    with pytest.raises(ValueError, match="keypoint_weights"):
        PoseLoss()(pred, {"heatmaps": gt, "keypoint_weights": weights[:, :2]})


# ------------------------------------------------------------------------------------------------
# Segmentation


def _seg_data(b=2, c=5, h=4, w=5):
    logits = torch.randn(b, c, h, w, dtype=D) * 2
    labels = torch.randint(0, c, (b, h, w))
    labels[torch.rand(b, h, w) < 0.2] = 255
    return logits, labels


def _ce_loop(logits, labels, cw):
    b, c, h, w = logits.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                t = int(labels[i, y, x])
                if t == 255:
                    continue
                z = [float(logits[i, j, y, x]) for j in range(c)]
                lse = math.log(sum(math.exp(v) for v in z))
                total += -cw[t] * (z[t] - lse)
    return total / (b * h * w)


def _dice_loop(logits, labels, eps=1e-3):
    b, c, h, w = logits.shape
    per_sample = []
    for i in range(b):
        dices = []
        for cls in range(1, c):
            inter = sp = sg = 0.0
            for y in range(h):
                for x in range(w):
                    t = int(labels[i, y, x])
                    if t == 255:
                        continue
                    z = [math.exp(float(logits[i, j, y, x])) for j in range(c)]
                    p = z[cls] / sum(z)
                    g = 1.0 if t == cls else 0.0
                    inter, sp, sg = inter + p * g, sp + p * p, sg + g * g
            if sg > 0:
                dices.append((2 * inter + eps) / (sp + sg + eps))
        per_sample.append(1 - sum(dices) / len(dices) if dices else 0.0)
    return sum(per_sample) / b


def test_weighted_ce_matches_loop_averaged_over_all_pixels():
    logits, labels = _seg_data()
    cw = [0.1, 10.0, 3.0, 2.0, 4.0]
    ref = _ce_loop(logits, labels, cw)
    _close(weighted_cross_entropy(logits, labels, torch.tensor(cw, dtype=D)), ref)


def test_dice_matches_loop_with_empty_and_background_only_samples():
    logits, labels = _seg_data(b=4)
    labels[2] = 255  # nothing valid
    labels[3] = torch.where(labels[3] == 255, 255, 0)  # background only
    ref = _dice_loop(logits, labels)
    _close(dice_loss(logits, labels), ref)
    _close(dice_loss(logits[2:], labels[2:]), 0.0)


def test_seg_loss_composite_official_weights():
    logits, labels = _seg_data(c=29, h=3, w=4)
    out = SegLoss()(logits, {"seg": labels})
    assert set(out) == {"ce", "dice", "loss"}
    _close(out["ce"], _ce_loop(logits, labels, list(OFFICIAL_CLASS_WEIGHT)), 1e-6)
    _close(out["dice"], _dice_loop(logits, labels))
    _close(out["loss"], float(out["ce"] + out["dice"]))
    # CLASS_WEIGHT of sapiens/dense/configs/seg/shutterstock_goliath/*.py
    assert OFFICIAL_CLASS_WEIGHT == (
        (0.1, 10, 10, 3, 2, 4, 4, 2, 2, 6, 10, 3, 3, 1, 4, 4, 2, 2, 6, 10, 3, 3, 1, 1) + (10,) * 5
    )
    out2 = SegLoss(SegLossWeights(ce=2.0, dice=0.0))(logits, {"seg": labels})
    assert set(out2) == {"ce", "loss"}
    _close(out2["loss"], 2 * float(out["ce"]), 1e-6)


def test_seg_ignored_pixels_do_not_contribute_and_perfect_logits_give_zero():
    logits, labels = _seg_data()
    loss = SegLoss(SegLossWeights(class_weight=None))
    base = loss(logits, {"seg": labels})
    changed = torch.where((labels == 255)[:, None], torch.randn_like(logits) * 9, logits)
    other = loss(changed, {"seg": labels})
    for k in base:
        _close(other[k], float(base[k]))
    clean = torch.where(labels == 255, 0, labels)
    perfect = F.one_hot(clean, 5).permute(0, 3, 1, 2).to(D) * 60
    out = loss(perfect, {"seg": labels})
    assert float(out["ce"]) < 1e-12 and float(out["dice"]) < 1e-9
    _finite_grad(lambda p: loss(p, {"seg": labels}), logits)


def test_seg_logits_resized_to_label_size():
    _, labels = _seg_data(h=8, w=6)
    small = torch.randn(2, 5, 4, 3, dtype=D)
    up = F.interpolate(small, size=(8, 6), mode="bilinear", align_corners=False)
    loss = SegLoss(SegLossWeights(class_weight=None))
    a, b = loss(small, {"seg": labels}), loss(up, {"seg": labels})
    _close(a["loss"], float(b["loss"]))


def test_seg_bad_labels_error():
    logits, labels = _seg_data()
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\]"):
        SegLoss(SegLossWeights(class_weight=None))(logits, {"seg": labels})
    with pytest.raises(KeyError, match="'seg'"):
        SegLoss()(logits, {"labels": labels})
    with pytest.raises(ValueError, match="class weights"):
        SegLoss()(logits, {"seg": labels.clamp(max=4)})  # 29 weights, 5 classes


# ------------------------------------------------------------------------------------------------
# Normals


def _dense_data(b=2, c=3, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, h, w, generator=g, dtype=D),
        torch.randn(b, c, h, w, generator=g, dtype=D),
        _mask(b, h, w, seed=seed),
    )


def _valid_pixels(mask):
    b, _, h, w = mask.shape
    return [(i, y, x) for i in range(b) for y in range(h) for x in range(w) if mask[i, 0, y, x]]


def _cos_loop(pred, gt, mask):
    vals = []
    for i, y, x in _valid_pixels(mask):
        p, g = pred[i, :, y, x].numpy(), gt[i, :, y, x].numpy()
        vals.append(1 - p @ g / (max(np.linalg.norm(p), 1e-6) * max(np.linalg.norm(g), 1e-6)))
    return float(np.mean(vals))


def _l1_loop(pred, gt, mask):
    vals = [
        float((pred[i, :, y, x] - gt[i, :, y, x]).abs().sum()) for i, y, x in _valid_pixels(mask)
    ]
    return sum(vals) / len(vals)


def _grad_mse_loop(pred, gt, mask):
    """Per direction: the squared forward-difference error summed over channels, averaged over the
    valid pixel pairs (one count per pair, as the official 1-channel mask counts them)."""
    b, c, h, w = pred.shape
    res = []
    for dy, dx in ((0, 1), (1, 0)):
        vals = []
        for i in range(b):
            for y in range(h - dy):
                for x in range(w - dx):
                    if mask[i, 0, y, x] and mask[i, 0, y + dy, x + dx]:
                        err = 0.0
                        for ch in range(c):
                            dp = float(pred[i, ch, y + dy, x + dx] - pred[i, ch, y, x])
                            dg = float(gt[i, ch, y + dy, x + dx] - gt[i, ch, y, x])
                            err += (dp - dg) ** 2
                        vals.append(err)
        res.append(float(np.mean(vals)))
    return res


def test_normal_terms_match_loops():
    pred, gt, mask = _dense_data()
    _close(normal_cosine_loss(pred, gt, mask), _cos_loop(pred, gt, mask))
    _close(dense_l1_loss(pred, gt, mask), _l1_loop(pred, gt, mask))
    gx, gy = _grad_mse_loop(pred, gt, mask)
    _close(normal_grad_loss(pred, gt, mask), gx + gy)
    out = NormalLoss()(pred, {"normal": gt, "mask": mask[:, 0]})
    assert set(out) == {"cosine", "l1", "grad", "loss"}
    _close(out["cosine"], 10 * _cos_loop(pred, gt, mask))
    _close(out["l1"], _l1_loop(pred, gt, mask))
    _close(out["grad"], 10 * (gx + gy))
    _close(out["loss"], float(_sum_terms(out)))


def test_normal_loss_properties():
    pred, gt, mask = _dense_data()
    loss = NormalLoss()
    batch = {"normal": gt, "mask": mask}
    out = loss(gt, batch)
    assert all(float(v) < 1e-12 for v in out.values())
    # cosine is invariant to a positive per-pixel rescale of the prediction
    _close(normal_cosine_loss(pred * 3.7, gt, mask), float(normal_cosine_loss(pred, gt, mask)))
    # masked-out pixels (even NaN) do not contribute, gradient stays finite
    nan_pred = torch.where(mask, pred, torch.full_like(pred, float("nan")))
    other = torch.where(mask, pred, torch.randn_like(pred) * 50)
    a = _finite_grad(lambda p: loss(p, batch), nan_pred)
    b = loss(other, batch)
    for k in a:
        _close(a[k], float(b[k]))
    # (B, H, W) and (B, 1, H, W) masks are the same; an empty mask gives 0
    c = loss(pred, {"normal": gt, "mask": mask[:, 0]})
    _close(c["loss"], float(b["loss"]))
    empty = loss(pred, {"normal": gt, "mask": torch.zeros_like(mask)})
    assert all(float(v) == 0 for v in empty.values())


def test_normal_nan_prediction_term_replaced_by_zero():
    pred, gt, mask = _dense_data()
    pred[0, 0] = float("inf")  # every pixel of sample 0, channel x
    out = NormalLoss()(pred, {"normal": gt, "mask": mask})
    assert all(float(v) == 0 for v in out.values()), out


def test_dense_bad_input_errors():
    pred, gt, mask = _dense_data()
    with pytest.raises(ValueError, match="mask"):
        NormalLoss()(pred, {"normal": gt, "mask": mask[:, :, :2]})
    with pytest.raises(KeyError, match="'albedo'"):
        AlbedoLoss()(pred, {"normal": gt, "mask": mask})
    with pytest.raises(ValueError, match="channels"):
        NormalLoss()(pred[:, :2], {"normal": gt, "mask": mask})


# ------------------------------------------------------------------------------------------------
# Albedo


def _chroma_loop(pred, gt, mask):
    vals = []
    for i, y, x in _valid_pixels(mask):
        p = pred[i, :, y, x].clamp(0, 1).numpy()
        g = gt[i, :, y, x].numpy()
        vals.append(np.abs(p / (p.sum() + 1e-6) - g / (g.sum() + 1e-6)).sum())
    return float(np.mean(vals))


def test_albedo_terms_match_loops():
    pred, gt, mask = _dense_data(seed=1)
    pred, gt = pred * 0.6 + 0.4, gt.abs().clamp(max=1)
    gx, gy = _grad_mse_loop(pred, gt, mask)
    _close(albedo_grad_loss(pred, gt, mask), 0.5 * (gx + gy))
    _close(albedo_chromaticity_loss(pred, gt, mask), _chroma_loop(pred, gt, mask))
    out = AlbedoLoss()(pred, {"albedo": gt, "mask": mask})
    assert set(out) == {"l1", "grad", "chroma", "loss"}
    _close(out["l1"], 2 * _l1_loop(pred, gt, mask))
    _close(out["grad"], 2 * 0.5 * (gx + gy))
    _close(out["chroma"], _chroma_loop(pred, gt, mask))
    _close(out["loss"], float(_sum_terms(out)))


def test_albedo_properties():
    _, gt, mask = _dense_data(seed=2)
    gt = gt.abs().clamp(0.05, 1)
    batch = {"albedo": gt, "mask": mask}
    out = AlbedoLoss()(gt, batch)
    assert all(float(v) < 1e-12 for v in out.values())
    # chromaticity ignores brightness (within the clamp)
    _close(albedo_chromaticity_loss(gt * 0.5, gt, mask), 0.0, 1e-6)
    pred = torch.rand_like(gt)
    nan_pred = torch.where(mask, pred, torch.full_like(pred, float("nan")))
    a = _finite_grad(lambda p: AlbedoLoss()(p, batch), nan_pred)
    b = AlbedoLoss()(torch.where(mask, pred, torch.ones_like(pred) * 7), batch)
    for k in a:
        _close(a[k], float(b[k]))


# ------------------------------------------------------------------------------------------------
# Pointmap


def _camera(b, h, w):
    K = torch.zeros(b, 3, 3, dtype=D)
    for i in range(b):
        f = 6.0 + 2 * i
        K[i] = torch.tensor([[f, 0, (w - 1) / 2 + 0.3 * i], [0, f * 1.1, (h - 1) / 2], [0, 0, 1]])
    return K


def _pointmap_gt(b=2, h=6, w=5, seed=0):
    """A camera-consistent canonical pointmap (smooth depth) with its K, scale and mask."""
    g = torch.Generator().manual_seed(seed)
    K = _camera(b, h, w)
    z = 2 + torch.rand(b, 1, h, w, generator=g, dtype=D)
    u = torch.arange(w, dtype=D).view(1, 1, 1, w)
    v = torch.arange(h, dtype=D).view(1, 1, h, 1)
    fx, fy = K[:, 0, 0].view(b, 1, 1, 1), K[:, 1, 1].view(b, 1, 1, 1)
    cx, cy = K[:, 0, 2].view(b, 1, 1, 1), K[:, 1, 2].view(b, 1, 1, 1)
    pts = torch.cat([(u - cx) * z / fx, (v - cy) * z / fy, z], 1)
    scale = 768.0 / K[:, 0, 0].view(b, 1)
    mask = _mask(b, h, w, p=0.8, seed=seed)
    pts = torch.where(mask, pts * scale.view(b, 1, 1, 1), torch.zeros_like(pts))
    return pts, mask, scale, K


def _mean_depth_loop(gt, mask):
    out = []
    for i in range(gt.shape[0]):
        zs = [float(gt[i, 2, y, x]) for j, y, x in _valid_pixels(mask) if j == i]
        out.append(sum(zs) / len(zs))
    return out


def _upsample2_1d(a, axis):
    """Bilinear x2 (half-pixel centres) along one axis, edges clamped."""
    n = a.shape[axis]
    idx = np.arange(n)
    left = np.take(a, np.clip(idx - 1, 0, n - 1), axis=axis)
    right = np.take(a, np.clip(idx + 1, 0, n - 1), axis=axis)
    even, odd = 0.25 * left + 0.75 * a, 0.75 * a + 0.25 * right
    out = np.stack([even, odd], axis=axis + 1)
    shape = list(a.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def _multiscale_loop(pred, gt, mask):
    """x2 bilinear of both maps (as given), mask nearest, dense L1 at the new size."""
    pu = _upsample2_1d(_upsample2_1d(pred.numpy(), 2), 3)
    gu = _upsample2_1d(_upsample2_1d(gt.numpy(), 2), 3)
    mu = mask.numpy().repeat(2, axis=2).repeat(2, axis=3)
    return float((np.abs(pu - gu).sum(1, keepdims=True) * mu).sum() / mu.sum())


def test_pointmap_depth_normalised_l1_and_multiscale_match_loops():
    gt, mask, scale, K = _pointmap_gt()
    pred = gt + 0.3 * torch.randn_like(gt)  # non-zero outside the mask, like a network's output
    md = _mean_depth_loop(gt, mask)
    _close(gt_mean_depth(gt, mask).flatten()[1], md[1])
    norm = torch.tensor(md, dtype=D).view(-1, 1, 1, 1)
    pn, gn = pred / norm, gt / norm
    batch = {"pointmap": gt, "mask": mask, "scale": scale, "K": K}
    out = PointmapLoss()((pred, scale), batch)
    _close(out["l1"], 2 * _l1_loop(pn, gn, mask))
    # official: the raw prediction is upsampled, so predicted values outside the mask reach
    # the valid pixels next to the border
    official = _multiscale_loop(pn, gn, mask)
    _close(out["multiscale_l1"], official)
    # our option: zero outside the mask first (the behaviour before the official default)
    zeroed = _multiscale_loop(torch.where(mask, pn, torch.zeros_like(pn)), gn, mask)
    opt = PointmapLoss(PointmapLossWeights(multiscale_zero_outside=True))((pred, scale), batch)
    _close(opt["multiscale_l1"], zeroed)
    assert abs(official - zeroed) > 1e-6  # the option changes the value here
    for k in set(out) - {"multiscale_l1", "loss"}:
        _close(opt[k], float(out[k]))
    _close(multiscale_l1_loss(pn, gn, mask, scales=(1.0,)), float(dense_l1_loss(pn, gn, mask)))


def test_pointmap_clamp_applies_to_the_weighted_loss_value():
    """The official head clamps the weighted L1, multiscale L1 and shift-invariant L1 values at 4
    (no gradient above); the code before clamped the depth-normalised maps instead, which let these
    terms exceed 4 and cut off large per-pixel errors below it."""
    gt, mask, scale, K = _pointmap_gt()
    batch = {"pointmap": gt, "mask": mask, "scale": scale, "K": K}
    clamped = ("l1", "multiscale_l1", "shift_l1")
    # far from the target: each clamped term is exactly 4 and passes no gradient
    far = (5 - 20 * gt).requires_grad_(True)
    out = PointmapLoss()((far, scale), batch)
    for k in clamped:
        assert float(out[k].detach()) == 4.0, (k, float(out[k].detach()))
        (g,) = torch.autograd.grad(out[k], far, retain_graph=True)
        assert float(g.abs().max()) == 0.0
    raw = PointmapLoss(PointmapLossWeights(loss_clamp_max=None))((far, scale), batch)
    assert all(float(raw[k].detach()) > 4.0 for k in clamped)
    # one valid pixel 50 mean depths off: the maps are not clamped, the term (< 4) sees it whole
    md = gt_mean_depth(gt, mask)
    pred = gt.clone()
    pred[0, 2, 0, 0] = 50 * md.flatten()[0]
    out = PointmapLoss()((pred, scale), batch)
    n_valid = float(mask.sum())
    ref = 2 * abs(50 - float(gt[0, 2, 0, 0] / md.flatten()[0])) / n_valid
    assert ref < 4
    _close(out["l1"], ref)
    with pytest.raises(ValueError, match="loss_clamp_max"):
        PointmapLossWeights(loss_clamp_max=0.0)


def test_silog_matches_loop_and_scale_properties():
    gt, mask, _, _ = _pointmap_gt(b=3)
    pz = gt[:, 2:3] * torch.exp(0.2 * torch.randn_like(gt[:, 2:3]))
    gz = gt[:, 2:3]
    per = []
    for i in range(3):
        d = [
            math.log(float(gz[i, 0, y, x])) - math.log(float(pz[i, 0, y, x]))
            for j, y, x in _valid_pixels(mask)
            if j == i
        ]
        per.append(math.sqrt(np.mean(np.square(d)) - 0.5 * np.mean(d) ** 2))
    _close(silog_loss(pz, gz, mask), float(np.mean(per)))
    # lambda = 1: invariant to a global scale of the prediction
    base = float(silog_loss(pz, gz, mask, variance_focus=1.0))
    _close(silog_loss(pz * 5.0, gz, mask, variance_focus=1.0), base, 1e-9)
    # lambda = 0.5: after removing the mean log ratio the loss is the std of d
    one = (pz[:1], gz[:1], mask[:1])
    d = torch.log(gz[:1]) - torch.log(pz[:1])
    dv = d[mask[:1]]
    shifted = pz[:1] * torch.exp(dv.mean())
    _close(silog_loss(shifted, one[1], one[2]), float(dv.std(unbiased=False)), 1e-9)
    # equal maps: exactly 0 with a finite gradient
    p = gz.clone().requires_grad_(True)
    loss = silog_loss(p, gz, mask)
    loss.backward()
    assert float(loss.detach()) == 0 and torch.isfinite(p.grad).all()


def test_intrinsics_consistency():
    gt, mask, _, K = _pointmap_gt()
    _close(intrinsics_consistency_loss(gt, K, mask), 0.0, 1e-12)
    pred = gt + torch.randn_like(gt)
    vals = []
    for i, y, x in _valid_pixels(mask):
        fx, fy, cx, cy = (
            float(K[i, 0, 0]),
            float(K[i, 1, 1]),
            float(K[i, 0, 2]),
            float(K[i, 1, 2]),
        )
        X, Y, Z = (float(t) for t in pred[i, :, y, x])
        vals.append(abs(X - (x - cx) * Z / fx) + abs(Y - (y - cy) * Z / fy))
    _close(intrinsics_consistency_loss(pred, K, mask), float(np.mean(vals)))


def test_shift_invariant_l1():
    gt, mask, _, _ = _pointmap_gt()
    pred = gt + 0.5 * torch.randn_like(gt)
    base = float(shift_invariant_l1_loss(pred, gt, mask))
    shift = torch.randn(2, 3, 1, 1, dtype=D)
    _close(shift_invariant_l1_loss(pred + shift, gt, mask), base)
    _close(shift_invariant_l1_loss(gt + shift, gt, mask), 0.0, 1e-12)
    # loop: centroids over valid pixels, then L1 summed over channels
    vals = []
    for i, y, x in _valid_pixels(mask):
        sel = mask[i, 0]
        cp, cg = pred[i][:, sel].mean(1), gt[i][:, sel].mean(1)
        vals.append(float(((pred[i, :, y, x] - cp) - (gt[i, :, y, x] - cg)).abs().sum()))
    _close(base, float(np.mean(vals)))


def _normals_loop(pts, amplification=100.0, min_length=1e-6):
    """Normals by explicit neighbour indexing with reflect padding at the right / bottom:
    ``cross(a (right - centre), a (down - centre)) / max(length, min_length)``; also the lengths."""
    b, _, h, w = pts.shape
    out, length = np.zeros((b, 3, h, w)), np.zeros((b, h, w))
    p = pts.numpy()
    for i in range(b):
        for y in range(h):
            for x in range(w):
                xr = x + 1 if x + 1 < w else w - 2
                yd = y + 1 if y + 1 < h else h - 2
                c = p[i, :, y, x]
                n = np.cross(
                    (p[i, :, y, xr] - c) * amplification, (p[i, :, yd, x] - c) * amplification
                )
                length[i, y, x] = np.linalg.norm(n)
                out[i, :, y, x] = n / max(length[i, y, x], min_length)
    return out, length


def _normal_loss_loop(pred, gt, scale, mask, drop_boundary=False):
    """``PointmapNormalLoss`` pixel by pixel: over mask pixels with a non-degenerate GT normal,
    ``(1 - clamp(cos)) + mean_c |n̂ - n|`` (a degenerate predicted normal counts as 0)."""
    s = scale.view(-1, 1, 1, 1)
    npd, lp = _normals_loop(pred / s)
    ngt, lg = _normals_loop(gt / s)
    _, _, h, w = gt.shape
    vals = []
    for i, y, x in _valid_pixels(mask):
        xr, yd = (x + 1 if x + 1 < w else w - 2), (y + 1 if y + 1 < h else h - 2)
        if lg[i, y, x] <= 1e-6:
            continue
        if drop_boundary and not (mask[i, 0, y, xr] and mask[i, 0, yd, x]):
            continue
        n_hat = npd[i, :, y, x] if lp[i, y, x] > 1e-6 else np.zeros(3)
        cos = float(np.clip(n_hat @ ngt[i, :, y, x], -1, 1))
        vals.append(1 - cos + np.abs(n_hat - ngt[i, :, y, x]).mean())
    return float(np.mean(vals))


def test_pointmap_normals_and_normal_loss():
    gt, mask, scale, _ = _pointmap_gt()
    n, length = pointmap_normals(gt)
    ref_n, ref_len = _normals_loop(gt)
    # where the right and lower neighbours coincide (a mask corner, GT 0 there) the length is 0
    # up to rounding (a fused multiply-add leaves ~1e-16 of the products): below min_length
    np.testing.assert_allclose(length[:, 0].numpy(), ref_len, rtol=1e-12, atol=1e-6)
    ok = ref_len > 1e-6
    assert ok.mean() > 0.8 and float(length[:, 0][torch.from_numpy(~ok)].max()) < 1e-6
    np.testing.assert_allclose(
        n.permute(0, 2, 3, 1).numpy()[ok], ref_n.transpose(0, 2, 3, 1)[ok], rtol=0, atol=1e-12
    )
    # a plane z = 3 + 0.5 x: interior normals are ±(−0.5, 0, 1)/|·|
    yy, xx = torch.meshgrid(torch.arange(4, dtype=D), torch.arange(5, dtype=D), indexing="ij")
    plane = torch.stack([xx, yy, 3 + 0.5 * xx])[None]
    pn, _ = pointmap_normals(plane)
    ref = torch.tensor([-0.5, 0.0, 1.0], dtype=D) / math.sqrt(1.25)
    inner = pn[0, :, :-1, :-1].reshape(3, -1)
    torch.testing.assert_close(inner, ref[:, None].expand_as(inner), rtol=0, atol=1e-12)
    # loss: loop reference (official: mask-border pixels count, their neighbours outside the mask
    # are GT 0 and the raw prediction), zero at GT, invariant to scaling / shifting the prediction
    pred = gt + 0.05 * torch.randn_like(gt)
    ref_loss = _normal_loss_loop(pred, gt, scale, mask)
    _close(pointmap_normal_loss(pred, gt, scale, mask), ref_loss)
    _close(pointmap_normal_loss(gt, gt, scale, mask), 0.0, 1e-12)
    moved = 2.5 * pred + torch.tensor([1.0, -2.0, 0.5], dtype=D).view(1, 3, 1, 1)
    _close(pointmap_normal_loss(moved, gt, scale, mask), ref_loss, 1e-9)
    # our option: only pixels whose right and lower neighbours are valid too (the old behaviour)
    inner_loss = _normal_loss_loop(pred, gt, scale, mask, drop_boundary=True)
    _close(pointmap_normal_loss(pred, gt, scale, mask, drop_boundary=True), inner_loss)
    assert abs(inner_loss - ref_loss) > 1e-5
    w = PointmapLossWeights(normal_drop_boundary=True)
    batch = {"pointmap": gt, "mask": mask, "scale": scale, "K": _camera(2, 6, 5)}
    _close(PointmapLoss(w)((pred, scale), batch)["normal"], 2 * inner_loss)
    _close(PointmapLoss()((pred, scale), batch)["normal"], 2 * ref_loss)


def test_pointmap_composite():
    gt, mask, scale, K = _pointmap_gt()
    batch = {"pointmap": gt, "mask": mask[:, 0], "scale": scale, "K": K}
    loss = PointmapLoss()
    names = {"l1", "multiscale_l1", "silog", "intrinsics", "shift_l1", "normal", "scale", "loss"}
    zero = loss((gt, scale), batch)
    assert set(zero) == names
    assert all(float(v) < 1e-9 for v in zero.values()), zero
    _finite_grad(lambda p: loss((p, scale), batch), gt)  # at the optimum (sqrt, normalise, |.|)
    pred = gt + 0.2 * torch.randn_like(gt)
    ps = scale + 0.01
    out = loss((pred, ps), batch)
    _close(out["loss"], float(_sum_terms(out)))
    _close(out["scale"], 4 * 0.01, 1e-9)
    _close(scale_l1_loss(ps, scale), 0.01, 1e-9)
    # masked-out predictions reach only the two terms that read neighbours (official: the
    # multiscale resizing and the normals at the mask border) ...
    reads_outside = {"multiscale_l1", "normal", "loss"}
    other = torch.where(mask, pred, torch.randn_like(pred) * 50)
    b = loss((other, ps), batch)
    for k in set(out) - reads_outside:
        _close(b[k], float(out[k]))
    assert all(abs(float(b[k]) - float(out[k])) > 1e-6 for k in reads_outside)
    # ... and none with both deviations on: even NaN there changes nothing, gradients stay finite
    inside_only = PointmapLoss(
        PointmapLossWeights(multiscale_zero_outside=True, normal_drop_boundary=True)
    )
    ref = inside_only((pred, ps), batch)
    nan_pred = torch.where(mask, pred, torch.full_like(pred, float("nan")))
    a = _finite_grad(lambda p: inside_only((p, ps), batch), nan_pred)
    for k in a:
        _close(a[k], float(ref[k]))
    # a masked-out block (zero-area normals there) keeps the gradient finite
    block = mask.clone()
    block[:, :, 3:, 2:] = False
    _finite_grad(lambda p: inside_only((p, ps), {**batch, "mask": block}), nan_pred)
    _finite_grad(lambda p: loss((p, ps), {**batch, "mask": block}), torch.where(block, pred, gt))
    # composite shift-invariant term ignores a common shift (values stay under the clamp)
    w = PointmapLossWeights(
        l1=0, multiscale_l1=0, silog=0, intrinsics=0, normal=0, scale=0, shift_l1=1
    )
    only = PointmapLoss(w)
    s1 = only((pred, ps), batch)
    s2 = only((pred + torch.tensor([0.1, -0.2, 0.05], dtype=D).view(1, 3, 1, 1), ps), batch)
    assert set(s1) == {"shift_l1", "loss"}
    _close(s2["loss"], float(s1["loss"]), 1e-9)
    with pytest.raises(TypeError, match="tuple"):
        loss(pred, batch)
    with pytest.raises(ValueError, match="scale"):
        loss((pred, ps[:1]), batch)


def test_create_loss():
    assert isinstance(create_loss("seg"), SegLoss)
    assert isinstance(create_loss("pointmap", PointmapLossWeights(scale=1.0)), PointmapLoss)
    with pytest.raises(ValueError, match="unknown task"):
        create_loss("depth")
    with pytest.raises(TypeError, match="SegLossWeights"):
        create_loss("seg", PoseLossWeights())


def test_float32_and_bf16_predictions_are_computed_in_float32():
    gt, mask, scale, K = _pointmap_gt()
    batch = {"pointmap": gt.float(), "mask": mask, "scale": scale.float(), "K": K.float()}
    out = PointmapLoss()((gt.bfloat16(), scale.bfloat16()), batch)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


def test_recipe_options_switch_the_pointmap_deviations():
    from sapiens2.train.recipes import get_recipe
    from sapiens2.train.trainer import recipe_loss

    default = recipe_loss(get_recipe("pointmap-tiny")).weights
    assert default == PointmapLossWeights()  # the official terms
    assert not default.multiscale_zero_outside and not default.normal_drop_boundary
    r = get_recipe("pointmap-1b").with_overrides(
        ["pointmap_multiscale_zero_outside=true", "pointmap_normal_drop_boundary=true"]
    )
    w = recipe_loss(r).weights
    assert w.multiscale_zero_outside and w.normal_drop_boundary
    assert recipe_loss(get_recipe("normal-tiny")).weights == NormalLossWeights()
