"""sapiens2: the Sapiens2 human-centric vision model family in PyTorch."""

# the task modules register their heads, runners and outputs with the layers below (last: they
# import those layers)
from sapiens2 import tasks
from sapiens2.checkpoints import (
    CheckpointError,
    create_model,
    load_model,
    push_to_hub,
    save_model,
    save_pretrained,
)
from sapiens2.models import ARCHS, ArchConfig, Sapiens2, TaskModel

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

__all__ = [
    "ARCHS",
    "ArchConfig",
    "CheckpointError",
    "Sapiens2",
    "TaskModel",
    "__version__",
    "create_model",
    "load_model",
    "push_to_hub",
    "save_model",
    "save_pretrained",
    "tasks",
]
