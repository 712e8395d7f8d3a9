"""Official-layout checkpoints: reading, arch/task inference, strict loading, saving, hub ids."""

from sapiens2.checkpoints.errors import CheckpointError
from sapiens2.checkpoints.hub import hub_filename, resolve_source
from sapiens2.checkpoints.infer import detect_task, infer_arch, infer_head
from sapiens2.checkpoints.io import read_state_dict, write_state_dict
from sapiens2.checkpoints.load import (
    load_model,
    load_state_dict_strict,
    save_model,
    state_dict_for_saving,
)

__all__ = [
    "CheckpointError",
    "detect_task",
    "hub_filename",
    "infer_arch",
    "infer_head",
    "load_model",
    "load_state_dict_strict",
    "read_state_dict",
    "resolve_source",
    "save_model",
    "state_dict_for_saving",
    "write_state_dict",
]
