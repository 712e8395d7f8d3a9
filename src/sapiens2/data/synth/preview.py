"""A picture of synthetic samples with all their labels (for docs and quick visual checks)."""

from __future__ import annotations

import cv2
import numpy as np

from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.data.synth.render import SynthSample

COLUMNS = ("rgb", "keypoints", "seg", "normal", "depth", "albedo")


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, radius: int = 1) -> np.ndarray:
    """Draws the 308-point skeletons.

    Args:
        image: (H, W, 3) uint8 RGB.
        keypoints: (P, 308, 3) rows (x, y, v).
        radius: point radius in pixels.

    Returns:
        (H, W, 3) uint8 RGB copy with links (both ends labelled) and points; visible points are
        filled, occluded ones drawn as rings.
    """
    meta = keypoints308()
    out = np.ascontiguousarray(image.copy())
    for kp in keypoints:
        for (a, b), col in zip(meta.skeleton, meta.link_colors, strict=True):
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                pa = (round(float(kp[a, 0])), round(float(kp[a, 1])))
                pb = (round(float(kp[b, 0])), round(float(kp[b, 1])))
                cv2.line(out, pa, pb, tuple(int(c) for c in col), 1, cv2.LINE_AA)
        for (x, y, v), col in zip(kp, meta.colors, strict=True):
            if v > 0:
                c = tuple(int(c) for c in col) if v == 2 else (255, 60, 60)
                cv2.circle(out, (round(float(x)), round(float(y))), radius, c, -1 if v == 2 else 1)
    return out


def label_panels(sample: SynthSample) -> dict[str, np.ndarray]:
    """(H, W, 3) uint8 RGB panels of one sample, keyed by ``COLUMNS``."""
    m = sample.mask > 0
    seg = seg29().palette[sample.seg]
    seg_overlay = np.where(m[..., None], seg, (sample.image * 0.35).astype(np.uint8))
    # Normals as colours: x right -> red, y up -> green, z towards the camera -> blue.
    n = sample.normal * np.array([1.0, -1.0, -1.0])
    normal = np.where(m[..., None], (n + 1) * 127.5, 0).astype(np.uint8)
    z = sample.pointmap[..., 2]
    depth = np.zeros(m.shape, np.uint8)
    if m.any():
        lo, hi = z[m].min(), z[m].max()
        depth[m] = np.clip(255 * (1 - (z[m] - lo) / max(hi - lo, 1e-6)) * 0.85 + 38, 0, 255)
    depth = cv2.cvtColor(cv2.applyColorMap(depth, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    depth[~m] = 0
    return {
        "rgb": sample.image,
        "keypoints": draw_keypoints(sample.image, sample.keypoints),
        "seg": seg_overlay,
        "normal": normal,
        "depth": depth,
        "albedo": sample.albedo,
    }


def preview_grid(samples: list[SynthSample], gap: int = 2) -> np.ndarray:
    """(rows * H + gaps, 6 * W + gaps, 3) uint8 RGB grid: one row per sample, columns ``COLUMNS``."""
    rows = []
    for s in samples:
        panels = label_panels(s)
        h = panels["rgb"].shape[0]
        sep = np.full((h, gap, 3), 255, np.uint8)
        row = [x for name in COLUMNS for x in (panels[name], sep)][:-1]
        rows.append(np.concatenate(row, axis=1))
    w = rows[0].shape[1]
    sep = np.full((gap, w, 3), 255, np.uint8)
    return np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)
