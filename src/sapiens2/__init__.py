"""sapiens2: the Sapiens2 human-centric vision model family in PyTorch."""

from sapiens2.checkpoints import CheckpointError, load_model, save_model
from sapiens2.models import ARCHS, ArchConfig, Sapiens2, TaskModel, create_model

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
    "save_model",
]
