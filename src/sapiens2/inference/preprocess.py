"""Image preprocessing shared by all task predictors (as the official ``sapiens/*/tools/vis/vis_*.py``
with ``sapiens/engine/datasets/data_preprocessors/image_preprocessor.py``).

All functions take RGB ``uint8`` arrays of shape ``(H, W, 3)``; the official tools read BGR with
OpenCV and flip to RGB inside their preprocessor, which is the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sapiens2.data.geometry import LetterboxParams, letterbox_params
from sapiens2.data.image import IMAGE_MEAN, IMAGE_STD

# the one mean/std (sapiens2.data.image), under the names this module has always had
MEAN, STD = IMAGE_MEAN, IMAGE_STD


def to_tensor(
    images: list[np.ndarray] | np.ndarray,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Stack RGB images of one size and normalise them with the Sapiens2 mean/std.

    Args:
        images: a list of ``(H, W, 3)`` uint8 RGB arrays of equal shape, or one ``(B, H, W, 3)`` array.

    Returns:
        ``(B, 3, H, W)`` tensor ``(x - mean) / std`` in ``dtype`` on ``device``.
    """
    batch = np.stack(list(images)) if isinstance(images, list) else np.asarray(images)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected images of shape (B, H, W, 3), got {batch.shape}")
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device=device)
    x = x.permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


@dataclass(frozen=True)
class Prepared:
    """An image made ready for a dense-task forward pass (``Predictor.prepare``), so that the
    resize can run on a decoding thread instead of the thread that drives the model.

    Attributes:
        rgb: the original ``(H, W, 3)`` uint8 RGB image.
        input: the ``(h, w, 3)`` uint8 network input.
        box: the letterbox geometry (normal, pointmap, albedo), or None for the segmentation
            stretch.
    """

    rgb: np.ndarray
    input: np.ndarray
    box: LetterboxParams | None

    @property
    def resize(self) -> str:
        """``"stretch"`` (segmentation) or ``"letterbox"`` (the other dense tasks)."""
        return "stretch" if self.box is None else "letterbox"


def stretch_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Segmentation test resize: a plain stretch to ``size = (H, W)`` (no aspect preservation).

    Uses ``INTER_AREA`` when the new width is smaller than the original width, else
    ``INTER_CUBIC`` (the official ``SegResize`` rule, which looks at the width only).

    Returns:
        ``(H, W, 3)`` array of the input dtype.
    """
    h, w = size
    interp = cv2.INTER_AREA if w < image.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(image, (w, h), interpolation=interp)


def letterbox(
    image: np.ndarray, size: tuple[int, int], pad_value: int = 0
) -> tuple[np.ndarray, LetterboxParams]:
    """Aspect-preserving resize into ``size = (H, W)`` with centred constant padding.

    The official ``NormalResizePadImage``: ``s = min(W / w, H / h)``, new size ``int(w s)``,
    ``int(h s)`` (truncation), ``INTER_LINEAR``, ``left = pad_w // 2``, ``top = pad_h // 2``
    (geometry in :func:`sapiens2.data.geometry.letterbox_params`).

    Returns:
        ``(H, W, C)`` padded image and its :class:`~sapiens2.data.geometry.LetterboxParams`.
    """
    params = letterbox_params(image.shape[:2], size)
    new_h, new_w = params.new_hw
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(
        resized,
        params.top,
        params.bottom,
        params.left,
        params.right,
        cv2.BORDER_CONSTANT,
        value=(pad_value,) * 4,
    )
    return padded, params


def unletterbox(array, params: LetterboxParams, channels_last: bool = False):
    """Remove the letterbox padding from a network-resolution map.

    Args:
        array: ``(..., H_in, W_in)`` numpy array or tensor (``(H_in, W_in, C)`` if ``channels_last``).

    Returns:
        The same type cropped to the resized image, ``(..., new_h, new_w)``.
    """
    ys = slice(params.top, params.top + params.new_hw[0])
    xs = slice(params.left, params.left + params.new_hw[1])
    return array[ys, xs] if channels_last else array[..., ys, xs]
