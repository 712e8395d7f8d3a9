"""Model definitions: the arch table, the backbone, heads and task models."""

from sapiens2.models.backbone import Sapiens2, TokenSplit
from sapiens2.models.configs import ARCHS, ArchConfig, get_arch
from sapiens2.models.factory import build_model, create_model, init_weights
from sapiens2.models.task import TASKS, TaskModel, build_head, default_head_config, widen_head

__all__ = [
    "ARCHS",
    "TASKS",
    "ArchConfig",
    "Sapiens2",
    "TaskModel",
    "TokenSplit",
    "build_head",
    "build_model",
    "create_model",
    "default_head_config",
    "get_arch",
    "init_weights",
    "widen_head",
]
