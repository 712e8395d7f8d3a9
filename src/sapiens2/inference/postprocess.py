"""Dense-task post-processing (as ``sapiens/dense/tools/vis/vis_*.py``): from raw
network outputs to maps at the original size.

Every function handles one image: network outputs are ``(C, H_in, W_in)`` tensors for that image.
The ``*_tensor`` variants stay on the model's device (no host synchronisation), so that a batch's
maps can be brought to the host together with :func:`fetch`.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.data.geometry import LetterboxParams
from sapiens2.inference.preprocess import unletterbox


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(C, H, W)`` to ``size = (H', W')``, align_corners False, no antialias."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def fetch(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Host copies of device tensors, waiting once for all of them.

    On CUDA the copies go asynchronously into pinned memory and only the current stream is
    waited for (not the other threads' streams); elsewhere this is ``t.cpu().numpy()``.
    """
    if not tensors or tensors[0].device.type != "cuda":
        return [t.cpu().numpy() for t in tensors]
    host = []
    for t in tensors:
        buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.append(buf.copy_(t, non_blocking=True))
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [h.numpy() for h in host]


#: Segmentation logits resized to the original size are made in bands of output rows holding at
#: most this many values (1 GiB of float32; 9.2 MP images with 29 classes are resized whole): a
#: 30000 x 30000 image would otherwise need 104 GB.
SEG_BAND_VALUES = 2**28


def seg_labels_tensor(
    logits: torch.Tensor, size: tuple[int, int], band_values: int = SEG_BAND_VALUES
) -> torch.Tensor:
    """:func:`seg_labels` without leaving the device: ``(H, W)`` uint8 class ids.

    When the resized logits would hold more than ``band_values`` values they are made and reduced
    one band of output rows at a time (:func:`banded_bilinear_argmax`), so memory stays bounded
    for any image size.
    """
    logits = logits.float()
    if logits.shape[0] * size[0] * size[1] > band_values:
        return banded_bilinear_argmax(logits, size, band_values).to(torch.uint8)
    # ``max(dim).indices`` is argmax (first maximum on ties) with a much faster CPU kernel
    return _resize(logits, size).max(dim=0).indices.to(torch.uint8)


def banded_bilinear_argmax(
    x: torch.Tensor, size: tuple[int, int], band_values: int = SEG_BAND_VALUES
) -> torch.Tensor:
    """``_resize(x, size).max(dim=0).indices`` computed one band of output rows at a time.

    PyTorch's bilinear kernel (align_corners False) interpolates along W, then combines two
    source rows with the H weights. Here the W step is ``F.interpolate`` on the band's source
    rows (H unchanged: weights 1 and 0) and the H step uses the kernel's formula
    (``src = (y + 0.5) * H_in / H - 0.5``, clamped at 0). The values agree with the whole resize
    to a few float32 ulps (the kernel's fused multiply-adds round differently), so a label can
    differ only where two classes tie to that precision.

    Args:
        x: ``(C, H_in, W_in)`` float logits.
        size: output ``(H, W)``.

    Returns:
        ``(H, W)`` int64 class indices (first maximum on ties).
    """
    c, h_in, _ = x.shape
    h, w = size
    rows = max(1, band_values // max(1, c * w))
    scale = torch.tensor(h_in, dtype=torch.float32) / h
    out = torch.empty((h, w), dtype=torch.int64, device=x.device)
    for y0 in range(0, h, rows):
        y = torch.arange(y0, min(h, y0 + rows), dtype=torch.float32, device=x.device)
        src = torch.addcmul(torch.tensor(-0.5, device=x.device), y + 0.5, scale.to(x.device))
        src = src.clamp(min=0)
        i0 = src.to(torch.int64).clamp(max=h_in - 1)
        lam1 = (src - i0).clamp(0, 1)
        i1 = torch.where(i0 < h_in - 1, i0 + 1, i0)
        r0, r1 = int(i0.min()), int(i1.max()) + 1
        band = F.interpolate(
            x[None, :, r0:r1], size=(r1 - r0, w), mode="bilinear", align_corners=False
        )[0]
        top, bottom = band[:, i0 - r0], band[:, i1 - r0]
        values = top * (1 - lam1)[None, :, None] + bottom * lam1[None, :, None]
        out[y0 : y0 + len(y)] = values.max(dim=0).indices
    return out


def seg_labels(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Segmentation: bilinear-resize the logits ``(C, H_in, W_in)`` to ``size = (H, W)``, argmax.

    Returns:
        ``(H, W)`` uint8 class ids.
    """
    return fetch([seg_labels_tensor(logits, size)])[0]


def normal_map_tensor(raw: torch.Tensor, box: LetterboxParams) -> torch.Tensor:
    """:func:`normal_map` without leaving the device: ``(H, W, 3)`` float32, contiguous."""
    raw = raw.float()
    unit = raw / raw.norm(dim=0, keepdim=True).clamp(min=1e-8)
    return _resize(unletterbox(unit, box), box.in_hw).permute(1, 2, 0).contiguous()


def normal_map(raw: torch.Tensor, box: LetterboxParams) -> np.ndarray:
    """Normals: divide by the channel L2 norm (clamped at 1e-8), remove the letterbox padding and
    resize bilinearly to the original size. As in the official tool the result is not re-normalised
    after the resize, so vectors at resized pixels can be slightly shorter than 1.

    Args:
        raw: ``(3, H_in, W_in)`` unnormalised network output.

    Returns:
        ``(H, W, 3)`` float32 normals (x right, y down, z forward; OpenCV camera frame).
    """
    return fetch([normal_map_tensor(raw, box)])[0]


def canonical_to_metric_tensor(
    canonical: torch.Tensor, scale: torch.Tensor | float, box: LetterboxParams
) -> torch.Tensor:
    """The device half of :func:`metric_pointmap`: ``(h, w, 3)`` float32 ``canonical / scale``
    without the letterbox padding (not yet resized; a zero scale gives infinities)."""
    if isinstance(scale, torch.Tensor):
        scale = scale.float().reshape(-1)[0]
    metric = unletterbox(canonical.float() / scale, box)
    return metric.permute(1, 2, 0).contiguous()


def metric_pointmap_from_host(metric: np.ndarray, scale: float, box: LetterboxParams) -> np.ndarray:
    """The host half of :func:`metric_pointmap`, on the output of
    :func:`canonical_to_metric_tensor` brought to the host (``scale``: the one it divided by)."""
    if scale == 0:
        raise ValueError("pointmap scale prediction is 0; cannot convert to metric units")
    out_hw = tuple(box.in_hw)
    metric = np.ascontiguousarray(metric, dtype=np.float32)
    if out_hw[0] > metric.shape[0] or out_hw[1] > metric.shape[1]:
        for _ in range(4):
            metric = cv2.GaussianBlur(metric, (3, 3), 0.8)
    if metric.shape[:2] != out_hw:
        t = torch.from_numpy(np.ascontiguousarray(metric)).permute(2, 0, 1)
        metric = _resize(t, out_hw).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(metric, dtype=np.float32)


def metric_pointmap(
    canonical: torch.Tensor, scale: torch.Tensor | float, box: LetterboxParams
) -> np.ndarray:
    """Pointmap: metric = canonical / scale, un-letterbox; when upsampling, four 3×3 Gaussian blurs
    (sigma 0.8) before the bilinear resize to the original size.

    Args:
        canonical: ``(3, H_in, W_in)`` canonical pointmap; scale: the predicted scalar ``s``.

    Returns:
        ``(H, W, 3)`` float32 camera-frame XYZ in metres.
    """
    s = float(scale.reshape(-1)[0]) if isinstance(scale, torch.Tensor) else float(scale)
    metric = fetch([canonical_to_metric_tensor(canonical, s, box)])[0]
    return metric_pointmap_from_host(metric, s, box)


def albedo_map_tensor(raw: torch.Tensor, box: LetterboxParams) -> torch.Tensor:
    """:func:`albedo_map` without leaving the device: ``(H, W, 3)`` float32, contiguous."""
    out = _resize(unletterbox(raw.float().clamp(0, 1), box), box.in_hw)
    return out.clamp(0, 1).permute(1, 2, 0).contiguous()


def albedo_map(raw: torch.Tensor, box: LetterboxParams) -> np.ndarray:
    """Albedo: clamp to [0, 1], un-letterbox, bilinear resize to the original size.

    Args:
        raw: ``(3, H_in, W_in)`` RGB.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1].
    """
    return fetch([albedo_map_tensor(raw, box)])[0]
