"""Shared pieces of the export tests: the calibrated tolerance and one ONNX export of the official
tiny pose fixture (the slow step, done once per session)."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import official

import sapiens2

# Exported vs eager outputs, relative to max|reference|. Calibrated on the five official tiny
# fixtures (float32 forwards compared with our float64 forward, which keeps the bfloat16 RoPE
# roundings): bfloat16 roundings of q/k that flip with last-bit float32 differences (they depend
# on the CPU's GEMM kernels) give max 2.9e-4..5.4e-4 and mean 1.0e-5..2.6e-5 for pose, seg,
# normal and pointmap, for eager PyTorch and ONNX Runtime alike; losing the recipe (float32 RoPE)
# gives max 4.5e-3..7.0e-3 and mean 1.4e-4..3.9e-4. The bounds sit ~3x from both.
MAX_REL = 2e-3
MEAN_REL = 5e-5


def export_errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(max, mean)`` of ``|out - ref|`` relative to ``max|ref|``, in float64."""
    assert tuple(out.shape) == tuple(ref.shape), (out.shape, ref.shape)
    ref = ref.double()
    d = (out.double() - ref).abs()
    scale = ref.abs().max().item()
    return d.max().item() / scale, d.mean().item() / scale


def assert_export_close(out: torch.Tensor, ref: torch.Tensor, what: str = "") -> None:
    mx, mean = export_errors(out, ref)
    assert mx <= MAX_REL and mean <= MEAN_REL, f"{what}: max rel {mx:.3g}, mean rel {mean:.3g}"


def bf16_casts(path) -> int:
    """The number of Cast-to-bfloat16 nodes in an ONNX file."""
    import onnx

    return sum(
        n.op_type == "Cast"
        and any(a.name == "to" and a.i == onnx.TensorProto.BFLOAT16 for a in n.attribute)
        for n in onnx.load(str(path)).graph.node
    )


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(t for o in out for t in as_tuple(o))


@pytest.fixture(scope="session")
def onnx_deps():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def pose_onnx(onnx_deps, tmp_path_factory):
    """The official tiny pose fixture (18 blocks, bfloat16 RoPE) exported to ONNX:
    ``(file, contract, model, io)``. Without onnxscript's optimizer, which takes half of the
    export's time at this depth (test_export_kinds checks the optimized files on small models)."""
    from sapiens2.export import export_model

    path, io, _ = official("tiny_pose")
    model = sapiens2.load_model(path)
    out = tmp_path_factory.mktemp("export") / "tiny_pose.onnx"
    contract = export_model(model, out, source=str(path), optimize=False)
    return out, contract, model, io
