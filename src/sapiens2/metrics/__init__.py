"""Evaluation metrics for the Sapiens2 tasks (numpy / torch; no model or training imports).

Every metric is an accumulator with ``update(...)``, ``compute() -> dict``, ``reset()`` and
``sync()`` / ``all_reduce()`` (sums the state over ``torch.distributed`` ranks; a no-op when no
process group is initialised). See ``docs/metrics.md``.
"""

from sapiens2.metrics.albedo import AlbedoMetric, masked_ssim, masked_ssim_map
from sapiens2.metrics.coco_keypoints import COCO17_SIGMAS, CocoKeypointMetric, coco_keypoint_ap
from sapiens2.metrics.keypoints308 import (
    Keypoints308Metric,
    evaluate_keypoints308,
    oks_nms,
    rescore,
    score_and_nms,
    to_results_json,
)
from sapiens2.metrics.matting import MattingMetric, connectivity_phi, matting_errors
from sapiens2.metrics.normal import NormalMetric
from sapiens2.metrics.pointmap import PointmapMetric, least_squares_scale, pointmap_normals
from sapiens2.metrics.segmentation import SegmentationMetric

__all__ = [
    "COCO17_SIGMAS",
    "AlbedoMetric",
    "CocoKeypointMetric",
    "Keypoints308Metric",
    "MattingMetric",
    "NormalMetric",
    "PointmapMetric",
    "SegmentationMetric",
    "coco_keypoint_ap",
    "connectivity_phi",
    "evaluate_keypoints308",
    "least_squares_scale",
    "masked_ssim",
    "masked_ssim_map",
    "matting_errors",
    "oks_nms",
    "pointmap_normals",
    "rescore",
    "score_and_nms",
    "to_results_json",
]
