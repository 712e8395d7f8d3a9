"""Running an exported file (``.onnx`` through ONNX Runtime, ``.pt2`` through
``torch.export.load``) as the model it came from.

:func:`load_exported` reads the contract and returns a module that is called like the task model
(same input, same outputs), so :class:`sapiens2.inference.Predictor` and ``sapiens2 predict``
run their usual pre- and post-processing around it; an exported detector comes back as an
:class:`~sapiens2.detect.RTMDetDetector`.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from sapiens2.export.contract import (
    EMBEDDED_NAME,
    FILE_FORMATS,
    Contract,
    contract_path,
    file_format,
)
from sapiens2.export.kinds import get_kind

if TYPE_CHECKING:
    from sapiens2.detect import RTMDetDetector

logger = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], list[torch.Tensor]]


def is_exported(source: object) -> bool:
    """Whether ``source`` names an exported file (``.onnx`` / ``.pt2``) rather than a checkpoint."""
    return isinstance(source, str | Path) and Path(source).suffix.lower() in FILE_FORMATS


def read_contract(path: str | Path) -> Contract:
    """The contract of an exported file: ``<file>.json`` next to it, else the copy inside it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no contract, or one that does not parse (the message says which).
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    sidecar = contract_path(path)
    if sidecar.is_file():
        return Contract.from_json(sidecar.read_text(), str(sidecar))
    text = _embedded_contract(path, fmt)
    if text is None:
        raise ValueError(
            f"{path}: no pre-processing contract ({sidecar.name} is missing and the file holds "
            "none); export it with `sapiens2 export`"
        )
    return Contract.from_json(text, f"{path} (embedded contract)")


def _embedded_contract(path: Path, fmt: str) -> str | None:
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return next((p.value for p in model.metadata_props if p.key == EMBEDDED_NAME), None)
    try:
        with zipfile.ZipFile(path) as z:
            name = next(
                (n for n in z.namelist() if n.endswith(f"extra/{EMBEDDED_NAME}.json")), None
            )
            return z.read(name).decode() if name else None
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a torch.export archive ({err})") from None


class ExportedModel(nn.Module):
    """An exported task model called like the original: ``forward(x)`` on the normalised
    ``(B, 3, H, W)`` batch returns the same tensors (pointmap: a tuple; detector: two lists).

    A file exported with batch 1 is run one image at a time, so any batch works.

    Attributes:
        contract: what the file computes (:class:`~sapiens2.export.contract.Contract`).
        task: the contract's kind (``"pose"``, ..., ``"detector"``).
        input_size: ``(H, W)``, the only size the file takes.
    """

    def __init__(self, run: Runner, contract: Contract, device: torch.device) -> None:
        super().__init__()
        self.contract = contract
        self.task = contract.kind
        self.input_size = contract.input_size
        self._run = run
        # Callers read the device and dtype off the parameters (as for the real model).
        dtype = getattr(torch, contract.input.dtype)
        self.anchor = nn.Parameter(torch.empty(0, dtype=dtype, device=device), requires_grad=False)

    def forward(self, x: torch.Tensor):
        h, w = self.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, h, w):
            raise ValueError(
                f"this exported {self.task} model takes (B, 3, {h}, {w}) inputs, got "
                f"{tuple(x.shape)}"
            )
        x = x.to(self.anchor.dtype)
        step = self.contract.batch_size or x.shape[0]
        parts = [self._run(x[i : i + step]) for i in range(0, x.shape[0], step)]
        outs = [torch.cat(o) if len(o) > 1 else o[0] for o in zip(*parts, strict=True)]
        outs = [o.to(self.anchor.device) for o in outs]
        return _structure(outs, get_kind(self.task).output_groups)


def _structure(outs: list[torch.Tensor], groups: Sequence[int] | None):
    if groups:
        lists, at = [], 0
        for n in groups:
            lists.append(outs[at : at + n])
            at += n
        return tuple(lists)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _flatten(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for v in value for t in _flatten(v)]


def load_exported(
    path: str | Path, *, device: str | torch.device | None = None
) -> ExportedModel | RTMDetDetector:
    """Loads an exported file with its contract.

    Args:
        path: a ``.onnx`` or ``.pt2`` file written by :func:`sapiens2.export.export_model`.
        device: ``None`` / ``"cpu"``, or ``"cuda"`` (ONNX: the CUDA execution provider when
            ONNX Runtime has it, else the CPU; ``.pt2``: the program moved to the GPU).

    Returns:
        An :class:`ExportedModel` for a task model; an
        :class:`~sapiens2.detect.RTMDetDetector` around one for the detector.
    """
    from sapiens2.device import resolve_device

    path = Path(path)
    contract = read_contract(path)
    dev = resolve_device(device)
    if contract.file_format == "onnx":
        run, dev = _onnx_runner(path, contract, dev)
    else:
        run = _pt2_runner(path, dev)
    model = ExportedModel(run, contract, dev)
    logger.info(
        "exported %s model %s: input %s %s, %s",
        contract.kind,
        path,
        "x".join(map(str, contract.input.shape)),
        contract.input.dtype,
        contract.file_format,
    )
    if contract.kind != "detector":
        return model
    from sapiens2.detect import RTMDetDetector
    from sapiens2.detect.config import DetectorTestConfig, RTMDetConfig

    model.config = RTMDetConfig(**_tuples(contract.model["config"]))
    test_config = DetectorTestConfig(**_tuples(contract.model["test_config"]))
    classes = tuple(contract.model.get("classes", ("person",)))
    return RTMDetDetector(model, test_config, classes=classes)


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _onnx_runner(path: Path, contract: Contract, dev: torch.device) -> tuple[Runner, torch.device]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(
            "running .onnx files needs ONNX Runtime: pip install 'sapiens2[export]'"
        ) from None
    providers = ["CPUExecutionProvider"]
    if dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif dev.type != "cpu":
        logger.warning("ONNX Runtime has no %s provider here; running on the CPU", dev.type)
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as err:  # ORT raises its own types; the message matters
        hint = ""
        if contract.input.dtype == "bfloat16":
            hint = " (bfloat16 graphs need a runtime with bfloat16 kernels, e.g. CUDA)"
        raise ValueError(f"{path}: ONNX Runtime cannot load it{hint}: {err}") from None
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        outs = session.run(None, {name: x.detach().cpu().numpy()})
        return [torch.from_numpy(o) for o in outs]

    return run, torch.device("cpu")


def _pt2_runner(path: Path, dev: torch.device) -> Runner:
    program = torch.export.load(path)
    if dev.type != "cpu":
        program = torch.export.passes.move_to_device_pass(program, dev)
    module = program.module()

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return _flatten(module(x.to(dev)))

    return run
