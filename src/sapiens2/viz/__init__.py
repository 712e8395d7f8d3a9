"""Pictures of predictions: skeletons, segmentation overlays, normals, depth, albedo, mattes
(drawing only; files are written by :mod:`sapiens2.inference.writer`)."""

from sapiens2.viz.dense import (
    DepthRange,
    albedo_to_rgb,
    depth_colorbar,
    depth_to_rgb,
    normals_to_rgb,
)
from sapiens2.viz.layout import side_by_side
from sapiens2.viz.pose import draw_pose
from sapiens2.viz.seg import seg_legend, seg_overlay, seg_picture, seg_to_rgb

__all__ = [
    "DepthRange",
    "albedo_to_rgb",
    "depth_colorbar",
    "depth_to_rgb",
    "draw_pose",
    "normals_to_rgb",
    "seg_legend",
    "seg_overlay",
    "seg_picture",
    "seg_to_rgb",
    "side_by_side",
]
