"""Multi-crop views for pretraining (paper §2.4): 2 global and 4 local crops of one image, plus the
masks of the global views.

Global crops: RandomResizedCrop with scale [0.5, 1.0] and a horizontal flip, **no colour
augmentation** (colour cues matter for dense tasks). Local crops: scale [0.2, 0.7], flip, colour
jitter, grayscale, Gaussian blur and solarize. Everything is drawn from the ``numpy`` generator the
dataset passes in (``default_rng([seed, epoch, index])``), so the views of a sample do not depend on
workers or ranks. Images of any size come in; crops come out at fixed sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from sapiens2.data.image import IMAGE_MEAN, IMAGE_STD
from sapiens2.pretrain.masking import MaskConfig, sample_mask

__all__ = ["MultiCrop", "ViewsConfig", "collate_views"]

_MEAN = np.array(IMAGE_MEAN, dtype=np.float32)
_STD = np.array(IMAGE_STD, dtype=np.float32)


@dataclass(frozen=True)
class ViewsConfig:
    """Crop sizes and augmentation strengths.

    Args:
        global_size: (H, W) of the global crops (1024 x 768 for the 1K models).
        local_size: (H, W) of the local crops (not given by the paper; our default keeps DINO's
            local/global side ratio of about 0.4).
        num_global, num_local: 2 and 4.
        global_scale, local_scale: RandomResizedCrop area ranges.
        aspect: RandomResizedCrop aspect range relative to the output aspect.
        flip_prob: horizontal flip probability (all views).
        jitter_prob, brightness, contrast, saturation, hue: local colour jitter (DINO's values).
        gray_prob, blur_prob, solarize_prob: local grayscale / blur / solarize probabilities.
    """

    global_size: tuple[int, int] = (1024, 768)
    local_size: tuple[int, int] = (384, 288)
    num_global: int = 2
    num_local: int = 4
    global_scale: tuple[float, float] = (0.5, 1.0)
    local_scale: tuple[float, float] = (0.2, 0.7)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_prob: float = 0.2
    blur_prob: float = 0.5
    solarize_prob: float = 0.2

    def __post_init__(self) -> None:
        if self.num_global < 1:
            raise ValueError(f"num_global must be >= 1, got {self.num_global}")
        if self.num_local < 0:
            raise ValueError(f"num_local must be >= 0, got {self.num_local}")
        for name in ("global_scale", "local_scale", "aspect"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be an increasing positive range, got {(lo, hi)}")


def random_resized_crop(
    image: np.ndarray,
    out_hw: tuple[int, int],
    scale: tuple[float, float],
    aspect: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """A crop covering ``scale`` of the image area with aspect (relative to ``out_hw``) in
    ``aspect`` (log-uniform), resized to ``out_hw``; falls back to the largest centred crop of the
    output aspect after 10 tries."""
    h, w = image.shape[:2]
    oh, ow = out_hw
    target = ow / oh
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        ar = target * math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        cw = round(math.sqrt(area * ar))
        ch = round(math.sqrt(area / ar))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            break
    else:
        if w / h > target:
            ch, cw = h, max(1, round(h * target))
        else:
            cw, ch = w, max(1, round(w / target))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_AREA if ch > oh and cw > ow else cv2.INTER_LINEAR
    return cv2.resize(crop, (ow, oh), interpolation=interp)


def _colour_jitter(img: np.ndarray, cfg: ViewsConfig, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    ops = rng.permutation(4)
    for op in ops:
        if op == 0 and cfg.brightness > 0:
            x = x * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
        elif op == 1 and cfg.contrast > 0:
            mean = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean()
            x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
        elif op == 2 and cfg.saturation > 0:
            gray = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
            x = (x - gray) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + gray
        elif op == 3 and cfg.hue > 0:
            hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
            shift = round(rng.uniform(-cfg.hue, cfg.hue) * 180)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
        x = np.clip(x, 0, 255)
    return x.astype(np.uint8)


def local_colour(img: np.ndarray, cfg: ViewsConfig, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter, grayscale, Gaussian blur and solarize of a local view (uint8 RGB)."""
    if rng.random() < cfg.jitter_prob:
        img = _colour_jitter(img, cfg, rng)
    if rng.random() < cfg.gray_prob:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img = np.repeat(g[..., None], 3, axis=2)
    if rng.random() < cfg.blur_prob:
        sigma = rng.uniform(0.1, 2.0)
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)
    if rng.random() < cfg.solarize_prob:
        img = np.where(img >= 128, 255 - img, img).astype(np.uint8)
    return img


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    x = (img.astype(np.float32) - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class MultiCrop:
    """``transform(image (H, W, 3) uint8 RGB, rng) -> dict`` of views for :class:`ImageDataset`.

    Returns:
        ``{"global": (G, 3, H, W), "local": (L, 3, h, w)`` float32 normalised,
        ``"mask": (G, Hp*Wp)`` bool (True = hidden), ``"mask_block": (G,)`` bool``}``.

    Args:
        views: crop settings. mask: mask settings. stride: input pixels per token (16; 64 for
            4K), which sets the mask grid of the global views.
    """

    def __init__(self, views: ViewsConfig, mask: MaskConfig, stride: int) -> None:
        gh, gw = views.global_size
        if gh % stride or gw % stride:
            raise ValueError(f"global_size {views.global_size} must be a multiple of {stride}")
        lh, lw = views.local_size
        if views.num_local and (lh % stride or lw % stride):
            raise ValueError(f"local_size {views.local_size} must be a multiple of {stride}")
        self.views, self.mask, self.stride = views, mask, stride
        self.grid = (gh // stride, gw // stride)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"MultiCrop expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        v = self.views
        globals_, locals_, masks, blocks = [], [], [], []
        for _ in range(v.num_global):
            crop = random_resized_crop(image, v.global_size, v.global_scale, v.aspect, rng)
            if rng.random() < v.flip_prob:
                crop = crop[:, ::-1]
            globals_.append(_to_tensor(crop))
            m, is_block = sample_mask(self.grid, self.mask, rng)
            masks.append(torch.from_numpy(m))
            blocks.append(is_block)
        for _ in range(v.num_local):
            crop = random_resized_crop(image, v.local_size, v.local_scale, v.aspect, rng)
            if rng.random() < v.flip_prob:
                crop = np.ascontiguousarray(crop[:, ::-1])
            locals_.append(_to_tensor(local_colour(crop, v, rng)))
        lh, lw = v.local_size
        return {
            "global": torch.stack(globals_),
            "local": torch.stack(locals_) if locals_ else torch.zeros(0, 3, lh, lw),
            "mask": torch.stack(masks),
            "mask_block": torch.tensor(blocks),
        }


def collate_views(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches :class:`ImageDataset` items whose ``image`` is a :class:`MultiCrop` dict.

    Returns:
        ``global (B, G, 3, H, W)``, ``local (B, L, 3, h, w)``, ``mask (B, G, N)``,
        ``mask_block (B, G)``, ``index (B,)`` int64, ``key`` list of str.
    """
    views = [it["image"] for it in items]
    out = {k: torch.stack([v[k] for v in views]) for k in ("global", "local", "mask", "mask_block")}
    out["index"] = torch.tensor([it["index"] for it in items], dtype=torch.int64)
    out["key"] = [it["key"] for it in items]
    return out
