"""Inference: pre/post-processing, media reading, the task predictors, the streaming engine
(:func:`predict_source`) and the output writer (knows nothing of training)."""

from sapiens2.inference.engine import Prediction, PredictStats, predict_items, predict_source
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
    "PredictStats",
    "Prediction",
    "Predictor",
    "SegPredictor",
    "SegResult",
    "predict_items",
    "predict_source",
]
