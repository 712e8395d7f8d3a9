"""Pictures of alpha mattes: a composite over a new background and an RGBA cut-out."""

from __future__ import annotations

import numpy as np

# named backgrounds for ``--background``; any other colour is given as R,G,B or #RRGGBB
COLOURS: dict[str, tuple[int, int, int]] = {
    "green": (0, 177, 64),
    "blue": (0, 71, 187),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}


def parse_colour(value: str | tuple[int, int, int]) -> tuple[int, int, int] | None:
    """An RGB colour from a name (:data:`COLOURS`), ``"R,G,B"`` or ``"#RRGGBB"``; None when
    ``value`` is none of these (then it names an image file).

    Raises:
        ValueError: three numbers that are not all in 0..255.
    """
    if isinstance(value, tuple):
        rgb = value
    elif value.lower() in COLOURS:
        return COLOURS[value.lower()]
    elif len(value) == 7 and value.startswith("#"):
        try:
            rgb = tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[assignment]
        except ValueError:
            return None
    elif value.count(",") == 2:
        try:
            rgb = tuple(int(v) for v in value.split(","))  # type: ignore[assignment]
        except ValueError:
            return None
    else:
        return None
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"a background colour needs three values in 0..255, got {value!r}")
    return rgb  # type: ignore[return-value]


def composite(
    foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray | tuple[int, int, int]
) -> np.ndarray:
    """``F·α + B·(1 − α)`` as uint8 RGB, with the pre-multiplied foreground ``F·α``.

    Args:
        foreground: ``(H, W, 3)`` float in [0, 1], pre-multiplied by alpha (the matting head's).
        alpha: ``(H, W)`` float in [0, 1].
        background: ``(H, W, 3)`` uint8 RGB or one RGB colour.
    """
    a = np.clip(np.asarray(alpha, np.float32), 0, 1)[..., None]
    bg = np.asarray(background, np.float32) / 255.0
    out = np.clip(np.asarray(foreground, np.float32), 0, 1) + bg * (1 - a)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def cutout_rgba(foreground: np.ndarray, alpha: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """``(H, W, 4)`` uint8 straight-alpha RGBA: the colour ``F = (F·α) / α`` (0 where
    ``α < eps``) and the alpha, as image editors expect of a PNG cut-out."""
    a = np.clip(np.asarray(alpha, np.float32), 0, 1)
    fg = np.clip(np.asarray(foreground, np.float32), 0, 1)
    colour = np.where(a[..., None] >= eps, fg / np.maximum(a, eps)[..., None], 0.0)
    rgba = np.concatenate([np.clip(colour, 0, 1), a[..., None]], axis=-1)
    return np.round(rgba * 255).astype(np.uint8)


def alpha_to_rgb(alpha: np.ndarray) -> np.ndarray:
    """An alpha matte as a gray uint8 RGB picture."""
    a8 = np.round(np.clip(np.asarray(alpha, np.float32), 0, 1) * 255).astype(np.uint8)
    return np.repeat(a8[..., None], 3, axis=-1)
