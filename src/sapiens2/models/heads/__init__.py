"""Task heads: each takes the backbone feature map ``(B, D, Hp, Wp)`` and returns a prediction."""

from sapiens2.models.heads.dense import AlbedoHead, DenseHeadConfig, MattingHead, NormalHead
from sapiens2.models.heads.pointmap import PointmapHead, PointmapHeadConfig
from sapiens2.models.heads.pose import PoseHeadConfig, PoseHeatmapHead
from sapiens2.models.heads.seg import SegHead, SegHeadConfig

__all__ = [
    "AlbedoHead",
    "DenseHeadConfig",
    "MattingHead",
    "NormalHead",
    "PointmapHead",
    "PointmapHeadConfig",
    "PoseHeadConfig",
    "PoseHeatmapHead",
    "SegHead",
    "SegHeadConfig",
]
