"""Official-layout checkpoints: reading, arch/task inference, strict loading, saving, hub ids;
transformers-format folders, pushing to the hub, pretrained models by arch name."""

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
from sapiens2.checkpoints.pretrained import create_model, pretrained_id
from sapiens2.checkpoints.publish import push_to_hub
from sapiens2.checkpoints.transformers import save_pretrained

__all__ = [
    "CheckpointError",
    "create_model",
    "detect_task",
    "hub_filename",
    "infer_arch",
    "infer_head",
    "load_model",
    "load_state_dict_strict",
    "pretrained_id",
    "push_to_hub",
    "read_state_dict",
    "resolve_source",
    "save_model",
    "save_pretrained",
    "state_dict_for_saving",
    "write_state_dict",
]
