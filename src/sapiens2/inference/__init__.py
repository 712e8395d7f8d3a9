"""Inference: pre/post-processing, media reading and the task predictors (knows nothing of training)."""

from sapiens2.inference.predictor import (
    AlbedoPredictor,
    NormalPredictor,
    PointmapPredictor,
    PosePredictor,
    Predictor,
    SegPredictor,
)
from sapiens2.inference.results import (
    AlbedoResult,
    NormalResult,
    PointmapResult,
    PoseResult,
    SegResult,
)

__all__ = [
    "AlbedoPredictor",
    "AlbedoResult",
    "NormalPredictor",
    "NormalResult",
    "PointmapPredictor",
    "PointmapResult",
    "PosePredictor",
    "PoseResult",
    "Predictor",
    "SegPredictor",
    "SegResult",
]
