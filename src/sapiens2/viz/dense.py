"""Pictures of dense predictions: normals as RGB, depth as a turbo colormap, albedo on gray."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BACKGROUND_GRAY = 100
MIN_DEPTH, MAX_DEPTH = 0.1, 250.0  # metres; bounds of the inverse-depth colour range


def normals_to_rgb(normals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3)`` normals in [-1, 1] → uint8 RGB ``(n + 1) / 2 * 255`` with x→R, y→G, z→B.

    Pixels outside ``mask`` are set to ``n = -1`` (black), as in the official tool.
    """
    n = np.nan_to_num(np.asarray(normals, dtype=np.float32))
    if mask is not None:
        n = np.where(np.asarray(mask)[..., None] > 0, n, -1.0)
    return np.clip((n + 1) * 0.5 * 255, 0, 255).astype(np.uint8)


def albedo_to_rgb(albedo: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3)`` albedo in [0, 1] → uint8 RGB, background (mask 0) gray 100."""
    rgb = (np.clip(np.asarray(albedo, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    if mask is not None:
        rgb[np.asarray(mask) == 0] = BACKGROUND_GRAY
    return rgb


@dataclass
class DepthRange:
    """Depth bounds for colouring: ``near`` / ``far`` in metres (1st / 99th percentiles).

    ``update`` widens the range with another frame (min of the lows, max of the highs), which keeps
    the colours of a video stable.
    """

    near: float | None = None
    far: float | None = None

    def update(self, depth: np.ndarray, mask: np.ndarray | None = None) -> DepthRange:
        valid = _valid_depth(depth, mask)
        if valid.any():
            lo, hi = np.percentile(depth[valid], [1, 99])
            self.near = float(lo) if self.near is None else min(self.near, float(lo))
            self.far = float(hi) if self.far is None else max(self.far, float(hi))
        return self


def _valid_depth(depth: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= np.asarray(mask) > 0
    return valid


def depth_to_rgb(
    depth: np.ndarray, mask: np.ndarray | None = None, bounds: DepthRange | None = None
) -> np.ndarray:
    """Colour inverse depth with the turbo colormap (near = red, far = blue); background gray 100.

    The inverse-depth range is ``[1 / far, 1 / near]`` of ``bounds`` (default: this image's 1st / 99th
    percentiles), clamped to ``[1 / 250, 1 / 0.1]``. Non-positive or non-finite depths are background.

    Args:
        depth: ``(H, W)`` metres; mask: optional ``(H, W)`` foreground.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = _valid_depth(depth, mask)
    out = np.full((*depth.shape, 3), BACKGROUND_GRAY, np.uint8)
    if not valid.any():
        return out
    if bounds is None or bounds.near is None:
        bounds = DepthRange().update(depth, mask)
    inv_lo = max(1.0 / max(bounds.far, 1e-6), 1.0 / MAX_DEPTH)
    inv_hi = min(1.0 / max(bounds.near, 1e-6), 1.0 / MIN_DEPTH)
    inv = 1.0 / depth[valid]
    t = (inv - inv_lo) / max(inv_hi - inv_lo, 1e-12)
    codes = (np.clip(t, 0, 1) * 255).astype(np.uint8)
    colors = cv2.applyColorMap(codes.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)[:, ::-1]
    out[valid] = colors
    return out
