"""Stage 3, quality filters: pluggable scorers with bounds.

A scorer is any callable ``(H, W, 3) uint8 RGB -> float`` with a ``name``; a :class:`QualityCheck`
pairs it with a lower and/or upper bound. Built in: ``sharpness`` (variance of the Laplacian),
``clipped`` (fraction of near-black/near-white pixels), ``brightness`` (mean grey) and ``text``
(fraction of rows that look like overlaid text). A learned scorer (aesthetics, realism)
plugs in the same way: a picklable object with ``name`` and ``__call__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from sapiens2.curate.config import QualityConfig

_WORK_SIDE = 256


@runtime_checkable
class Scorer(Protocol):
    """A named image score."""

    name: str

    def __call__(self, rgb: np.ndarray) -> float: ...


def _grey(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    s = _WORK_SIDE / min(h, w)
    if s < 1:
        grey = cv2.resize(grey, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return grey


class Sharpness:
    """Variance of the 3x3 Laplacian of the grey image (short side resized down to 256 px)."""

    name = "sharpness"

    def __call__(self, rgb: np.ndarray) -> float:
        return float(cv2.Laplacian(_grey(rgb), cv2.CV_64F, ksize=3).var())


class Clipped:
    """Fraction of pixels whose grey level is <= 4 or >= 251 (under/over-exposure)."""

    name = "clipped"

    def __call__(self, rgb: np.ndarray) -> float:
        g = _grey(rgb)
        return float(np.count_nonzero((g <= 4) | (g >= 251)) / g.size)


class Brightness:
    """Mean grey level (0-255)."""

    name = "brightness"

    def __call__(self, rgb: np.ndarray) -> float:
        return float(_grey(rgb).mean())


class TextCoverage:
    """Fraction of image rows that look like overlaid text.

    Glyph strokes make many sharp light/dark alternations along a row: a row counts as text when
    more than 20% of its horizontally adjacent pixel pairs differ by more than 48 grey levels (short
    side resized down to 256 px). Natural photographs rarely have such rows; dense high-contrast
    textures (fine stripes, fences) do, so treat it as a heuristic to calibrate with an audit.
    """

    name = "text"

    def __call__(self, rgb: np.ndarray) -> float:
        g = _grey(rgb).astype(np.int16)
        if g.shape[1] < 2:
            return 0.0
        density = (np.abs(np.diff(g, axis=1)) > 48).mean(axis=1)
        return float((density > 0.2).mean())


@dataclass(frozen=True)
class QualityCheck:
    """A scorer with bounds: an image passes when ``low <= score <= high`` (None: unbounded)."""

    scorer: Scorer
    low: float | None = None
    high: float | None = None

    def reason(self, score: float) -> str:
        """ "" when ``score`` passes, else ``low_<name>`` / ``high_<name>``."""
        if self.low is not None and score < self.low:
            return f"low_{self.scorer.name}"
        if self.high is not None and score > self.high:
            return f"high_{self.scorer.name}"
        return ""


def builtin_checks(cfg: QualityConfig) -> list[QualityCheck]:
    """The built-in checks enabled in ``cfg`` (a check whose bounds are all None is left out)."""
    checks = [
        QualityCheck(Sharpness(), low=cfg.min_sharpness),
        QualityCheck(Clipped(), high=cfg.max_clipped),
        QualityCheck(Brightness(), low=cfg.min_brightness, high=cfg.max_brightness),
        QualityCheck(TextCoverage(), high=cfg.max_text),
    ]
    return [c for c in checks if c.low is not None or c.high is not None]


def score_image(rgb: np.ndarray, checks: list[QualityCheck]) -> tuple[dict[str, float], str]:
    """All scores of one image and the first failing check's reason ("" if it passes all)."""
    scores: dict[str, float] = {}
    drop = ""
    for c in checks:
        s = float(c.scorer(rgb))
        scores[c.scorer.name] = s
        if not drop:
            drop = c.reason(s)
    return scores, drop
