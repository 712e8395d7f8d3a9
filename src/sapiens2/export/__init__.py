"""Exported models: ``torch.export`` programs (``.pt2``) and ONNX files of the task models and the
person detector, each with its pre-processing contract (``<file>.json``), and a loader that runs
them as the original model (``sapiens2 predict --model FILE.onnx``). See docs/export.md.
"""

from sapiens2.export.contract import Contract, TensorSpec, contract_path
from sapiens2.export.exporter import export_model
from sapiens2.export.kinds import KINDS, ExportKind
from sapiens2.export.runtime import ExportedModel, is_exported, load_exported, read_contract

__all__ = [
    "KINDS",
    "Contract",
    "ExportKind",
    "ExportedModel",
    "TensorSpec",
    "contract_path",
    "export_model",
    "is_exported",
    "load_exported",
    "read_contract",
]
