"""Model definitions: the arch table, the backbone, heads and task models."""

from sapiens2.models.backbone import Sapiens2, TokenSplit
from sapiens2.models.configs import ARCHS, ArchConfig, get_arch
from sapiens2.models.factory import build_model, create_model, init_weights
from sapiens2.models.task import TaskModel, build_head, default_head_config, widen_head

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


def __getattr__(name: str):
    if name == "TASKS":  # the registered task names (sapiens2.tasks registers them on import)
        from sapiens2.models.task import head_tasks

        return head_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
