"""PCA pictures of patch features (the paper's feature visualisations)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def pca_rgb(features: torch.Tensor, *, lo: float = 1.0, hi: float = 99.0) -> np.ndarray:
    """First three principal components of a feature map, as an RGB picture.

    Args:
        features: ``(D, Hp, Wp)`` patch features of one image.
        lo, hi: percentiles of each component mapped to 0 and 255 (robust to outliers).

    Returns:
        ``(Hp, Wp, 3)`` uint8 RGB, one pixel per token.
    """
    d, hp, wp = features.shape
    x = features.float().reshape(d, hp * wp).T  # (N, D)
    x = x - x.mean(0, keepdim=True)
    # Principal directions from the SVD of the centred tokens; the sign of each component is fixed
    # so that its largest loading is positive (deterministic colours).
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    comps = v[:3].T  # (D, 3)
    signs = torch.sign(comps[comps.abs().argmax(0), torch.arange(comps.shape[1])])
    proj = (x @ (comps * signs)).numpy()  # (N, <=3)
    if proj.shape[1] < 3:
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    low, high = np.percentile(proj, lo, axis=0), np.percentile(proj, hi, axis=0)
    rgb = np.clip((proj - low) / np.maximum(high - low, 1e-8), 0, 1)
    return (rgb.reshape(hp, wp, 3) * 255).round().astype(np.uint8)


def feature_panel(image: np.ndarray, pca: np.ndarray) -> np.ndarray:
    """``[image | PCA upsampled to the image size]`` side by side (uint8 RGB)."""
    h, w = image.shape[:2]
    up = cv2.resize(pca, (w, h), interpolation=cv2.INTER_NEAREST)
    return np.concatenate([image, up], axis=1)
