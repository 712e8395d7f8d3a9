"""Writing a task model or the person detector as a ``torch.export`` program (``.pt2``) or an
ONNX file (``torch.onnx.export(dynamo=True)``), with its pre-processing contract next to it.

The exported graph takes the tensor the model's ``forward`` takes, a normalised ``(B, 3, H, W)``
batch, and returns the same outputs in the same order (flattened for ONNX: the detector's two
lists of three maps become six outputs). The input size is fixed; the batch is 1 or dynamic.

The bfloat16 RoPE recipe of the released models survives: the RoPE tables of the fixed input size
become constants and the rotation rounds q and k to bfloat16 with casts (see
:mod:`sapiens2.nn.rope`), so an ONNX runtime without bfloat16 arithmetic computes the same thing.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from sapiens2.detect import RTMDet, RTMDetDetector
from sapiens2.detect.config import DetectorTestConfig
from sapiens2.device import resolve_dtype
from sapiens2.export.contract import (
    EMBEDDED_NAME,
    Contract,
    TensorSpec,
    contract_path,
    file_format,
)
from sapiens2.export.kinds import ExportKind, get_kind
from sapiens2.models import TaskModel
from sapiens2.nn.precision import cpu_upcast

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
MAX_BATCH = 4096  # the upper bound of a dynamic batch
BF16_OPSET = 22  # Conv, ConvTranspose and InstanceNormalization take bfloat16 from opset 22


def export_model(
    model: TaskModel | RTMDetDetector | RTMDet,
    out: str | Path,
    *,
    dtype: str | torch.dtype | None = "fp32",
    dynamic_batch: bool = False,
    input_size: tuple[int, int] | None = None,
    source: str = "",
    opset: int | None = None,
    optimize: bool = True,
) -> Contract:
    """Exports ``model`` to ``out`` (``.pt2`` or ``.onnx``) and writes ``<out>.json``.

    Args:
        model: a task model (``sapiens2.load_model``), a detector (``sapiens2.detect.
            load_detector``) or a bare :class:`~sapiens2.detect.RTMDet` (official test config).
        out: the file to write; its suffix picks the format. ONNX files over 2 GB keep their
            weights in ``<out>.data`` next to it.
        dtype: weights, input and outputs in ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``; None
            keeps the model's dtype. A model of another dtype is converted on a copy.
        dynamic_batch: a graph for any batch size (else batch 1).
        input_size: ``(H, W)``; default: the size the model requires (pointmap), else its native
            size (1024x768 for the released models; the detector's square input, 640).
        source: where the model came from, recorded in the contract.
        opset: ONNX opset (default: the exporter's; 22 for bfloat16, the first opset whose
            convolutions and instance norms take bfloat16).
        optimize: run onnxscript's graph optimizer on the ONNX file (constant folding, pattern
            rewrites, fusions: about a third of the nodes). Its time grows faster than linearly
            with depth; ONNX Runtime optimizes at load anyway, and runs both graphs at the same
            speed and with the same outputs on the tiny fixture.

    Returns:
        The :class:`~sapiens2.export.contract.Contract` written next to ``out``.
    """
    out = Path(out)
    fmt = file_format(out)
    target = _Target.of(model, input_size)
    dt = resolve_dtype(dtype) if dtype is not None else None
    module = target.module
    current = next(module.parameters()).dtype
    if dt is not None and dt != current:
        module = copy.deepcopy(module).to(dt)
    dt = dt or current
    h, w = target.input_size
    example = torch.randn(
        2 if dynamic_batch else 1, 3, h, w, generator=torch.Generator().manual_seed(0)
    )
    example = example.to(dt)
    shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic_batch else None
    start = time.perf_counter()
    with _frozen_rope(module, target), cpu_upcast(False), torch.no_grad():
        program = torch.export.export(
            module.eval(), (example,), dynamic_shapes=shapes, strict=False
        )
    logger.info("traced the %s model in %.1f s", target.kind.name, time.perf_counter() - start)
    outputs = _output_specs(program, target.kind)
    contract = Contract(
        kind=target.kind.name,
        file_format=fmt,
        input=TensorSpec(INPUT_NAME, ("batch" if dynamic_batch else 1, 3, h, w), _dtype_name(dt)),
        outputs=outputs,
        mean=tuple(float(v) for v in target.mean),
        std=tuple(float(v) for v in target.std),
        channel_order=target.kind.channel_order,
        resize=target.kind.resize,
        rope=target.rope,
        model=target.info,
        source=str(source),
        sapiens2_version=_version(),
        torch_version=torch.__version__,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if fmt == "pt2":
        torch.export.save(program, out, extra_files={f"{EMBEDDED_NAME}.json": contract.to_json()})
    else:
        if opset is None and dt == torch.bfloat16:
            opset = BF16_OPSET
        contract = _save_onnx(program, example, contract, out, opset, optimize)
    contract_path(out).write_text(contract.to_json() + "\n")
    logger.info("wrote %s (%s) in %.1f s", out, fmt, time.perf_counter() - start)
    return contract


def _save_onnx(
    program: torch.export.ExportedProgram,
    example: torch.Tensor,
    contract: Contract,
    out: Path,
    opset: int | None,
    optimize: bool,
) -> Contract:
    # onnxscript logs a line per rewrite and merged constant; torch.onnx warns about torchvision
    # operators it cannot register when torchvision is absent (no model here uses them)
    with _quiet("onnxscript", "onnx_ir", "torch.onnx._internal.exporter._registration"):
        onnx_program = torch.onnx.export(
            program,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[o.name for o in contract.outputs],
            opset_version=opset,
            dynamo=True,
            optimize=optimize,
            verbose=False,
        )
    contract = replace(contract, opset=int(onnx_program.model.opset_imports[""]))
    onnx_program.model.metadata_props[EMBEDDED_NAME] = contract.to_json()
    onnx_program.save(out)
    return contract


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.ERROR))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@dataclass(frozen=True)
class _Target:
    """The module to trace and what the contract says about it."""

    module: nn.Module
    kind: ExportKind
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rope: str | None
    info: dict

    @classmethod
    def of(cls, model, input_size: tuple[int, int] | None) -> _Target:
        if isinstance(model, TaskModel):
            return cls._task(model, input_size)
        if isinstance(model, RTMDet):
            model = RTMDetDetector(model)
        if isinstance(model, RTMDetDetector):
            return cls._detector(model, input_size)
        raise TypeError(
            f"cannot export a {type(model).__name__}: pass a task model (sapiens2.load_model) or "
            "a person detector (sapiens2.detect.load_detector)"
        )

    @classmethod
    def _task(cls, model: TaskModel, input_size) -> _Target:
        arch = model.arch
        required = model.input_size
        size = tuple(input_size or required or arch.img_size)
        if required is not None and size != tuple(required):
            raise ValueError(
                f"this {model.task} model requires {required[0]}x{required[1]} inputs; "
                f"--input-size {size[0]} {size[1]} cannot be used"
            )
        _check_size(size, arch.stride, arch.name)
        kind = get_kind(model.task)
        info = {"task": model.task, "arch": arch.name}
        return cls(model, kind, size, kind.mean, kind.std, arch.rope_dtype, info)

    @classmethod
    def _detector(cls, det: RTMDetDetector, input_size) -> _Target:
        tc: DetectorTestConfig = det.test_config
        if input_size is not None:
            if input_size[0] != input_size[1]:
                raise ValueError(
                    f"the detector takes a square input, got --input-size {input_size[0]} "
                    f"{input_size[1]}"
                )
            tc = replace(tc, input_size=int(input_size[0]))
        size = (tc.input_size, tc.input_size)
        _check_size(size, 32, "RTMDet")
        cfg = det.model.config
        if tuple(cfg.strides) != (8, 16, 32):
            raise ValueError(
                f"only RTMDet with strides (8, 16, 32) can be exported, got {cfg.strides}"
            )
        info = {"config": asdict(cfg), "test_config": asdict(tc), "classes": list(det.classes)}
        return cls(det.model, get_kind("detector"), size, tc.mean_bgr, tc.std_bgr, None, info)


def _check_size(size: tuple[int, int], stride: int, name: str) -> None:
    if len(size) != 2 or min(size) <= 0 or size[0] % stride or size[1] % stride:
        raise ValueError(f"input size {size} must be two positive multiples of {stride} for {name}")


@contextmanager
def _frozen_rope(module: nn.Module, target: _Target) -> Iterator[None]:
    """The backbone's RoPE tables for the export size held as constants while tracing."""
    backbone = getattr(module, "backbone", None)
    rope = getattr(backbone, "rope_embed", None)
    if rope is None:  # the detector
        yield
        return
    stride = backbone.cfg.stride
    rope.freeze((target.input_size[0] // stride, target.input_size[1] // stride))
    try:
        yield
    finally:
        rope.unfreeze()


def _output_specs(
    program: torch.export.ExportedProgram, kind: ExportKind
) -> tuple[TensorSpec, ...]:
    """Names, shapes and dtypes of the program's outputs (a dynamic batch reads ``"batch"``)."""
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    specs = program.graph_signature.output_specs
    values = [
        arg.meta["val"]
        for arg, spec in zip(out_node.args[0], specs, strict=True)
        if spec.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT
    ]
    if len(values) != len(kind.output_names):
        raise RuntimeError(
            f"the {kind.name} model returned {len(values)} tensors; its export entry names "
            f"{len(kind.output_names)} ({', '.join(kind.output_names)})"
        )
    return tuple(
        TensorSpec(
            name,
            tuple(int(d) if isinstance(d, int) else "batch" for d in v.shape),
            _dtype_name(v.dtype),
        )
        for name, v in zip(kind.output_names, values, strict=True)
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _version() -> str:
    from sapiens2 import __version__

    return __version__
