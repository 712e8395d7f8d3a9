"""Every exportable kind (five tasks and the detector) round-trips through ``.pt2`` and ONNX: the
loaded file returns what the eager model returns, in the same order and structure."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tests.export.conftest import as_tuple, assert_export_close, bf16_casts

import sapiens2
from sapiens2.export import KINDS, export_model, load_exported
from sapiens2.models import TASKS
from sapiens2.models.task import default_head_config

SIZE = (64, 48)  # a 4x3 token grid
# The pointmap scale branch halves the grid three times and normalises each stage: 16x12 tokens.
POINTMAP_SIZE = (256, 192)


def _tiny(task: str) -> sapiens2.TaskModel:
    """A one-block tiny model (cheap to export) with random weights."""
    torch.manual_seed(0)
    arch = sapiens2.ARCHS["sapiens2_tiny"]
    head = default_head_config(task, arch)
    if task == "pointmap":  # the scale branch is sized for the input
        head = replace(head, token_grid=(POINTMAP_SIZE[0] // 16, POINTMAP_SIZE[1] // 16))
    return sapiens2.create_model("sapiens2_tiny", task=task, head=head, depth=1)


def _size(task: str) -> tuple[int, int]:
    return POINTMAP_SIZE if task == "pointmap" else SIZE


def _check(loaded, model, x):
    with torch.no_grad():
        got, ref = loaded(x), model(x)
    assert type(got) is type(ref)  # a tensor, or the pointmap's tuple
    for i, (g, r) in enumerate(zip(as_tuple(got), as_tuple(ref), strict=True)):
        assert_export_close(g, r, f"output {i}")


def test_every_task_and_the_detector_has_an_export_entry():
    assert set(KINDS) == {*TASKS, "detector"}


# pose in the quick suite; the other tasks' heads with the slow tests (one torch.export each)
@pytest.mark.parametrize(
    "task", [t if t == "pose" else pytest.param(t, marks=pytest.mark.slow) for t in TASKS]
)
def test_pt2_round_trip_with_a_dynamic_batch(task, tmp_path):
    model, size = _tiny(task), _size(task)
    out = tmp_path / f"{task}.pt2"
    contract = export_model(model, out, dynamic_batch=True, input_size=size)
    assert contract.input.shape == ("batch", 3, *size)
    assert [o.name for o in contract.outputs] == list(KINDS[task].output_names)
    assert all(o.shape[0] == "batch" for o in contract.outputs)
    loaded = load_exported(out)
    assert loaded.task == task and loaded.input_size == size
    _check(loaded, model, torch.randn(3, 3, *size))


# ONNX translation is the slow step (~2 CPU-s per model): pose is covered by the official fixture
# (test_onnx_fixture.py), seg's head is built of the same layers as pose's, normal's trunk is
# pointmap's; pointmap adds the scale branch and two outputs, albedo its RMS-normalised head.
@pytest.mark.slow
@pytest.mark.parametrize("task", ["pointmap", "albedo"])
def test_onnx_round_trip(task, tmp_path, onnx_deps):
    model, size = _tiny(task), _size(task)
    out = tmp_path / f"{task}.onnx"
    export_model(model, out, input_size=size)  # onnxscript's optimizer on
    assert bf16_casts(out) == 2 * 4  # the optimizer keeps the RoPE roundings of the one block
    _check(load_exported(out), model, torch.randn(2, 3, *size))  # batch 1 file, 2 images


def test_bf16_export_runs_in_bf16(tmp_path):
    model = _tiny("seg")
    contract = export_model(model, tmp_path / "seg.pt2", dtype="bf16", input_size=SIZE)
    assert contract.input.dtype == contract.outputs[0].dtype == "bfloat16"
    assert next(model.parameters()).dtype == torch.float32  # converted on a copy
    loaded = load_exported(tmp_path / "seg.pt2")
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        got, ref = loaded(x), model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    # bf16 arithmetic: compare at bf16 resolution
    assert (got.float() - ref.float()).abs().max() <= 2e-2 * ref.float().abs().max()


def test_bf16_onnx_is_a_valid_opset_22_model(tmp_path, onnx_deps):
    import onnx

    out = tmp_path / "seg.onnx"
    contract = export_model(_tiny("seg"), out, dtype="bf16", input_size=SIZE)
    assert contract.opset == 22  # bfloat16 convolutions and instance norms need opset 22
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_bad_requests_name_the_problem(tmp_path):
    model = _tiny("pose")
    with pytest.raises(ValueError, match=r"\.onnx or \.pt2"):
        export_model(model, tmp_path / "pose.bin")
    with pytest.raises(ValueError, match="multiples of 16"):
        export_model(model, tmp_path / "pose.pt2", input_size=(60, 48))
    with pytest.raises(ValueError, match="requires 256x192"):
        export_model(_tiny("pointmap"), tmp_path / "pm.pt2", input_size=SIZE)
    with pytest.raises(TypeError, match="cannot export a Sapiens2"):
        export_model(model.backbone, tmp_path / "b.pt2")
    with pytest.raises(ValueError, match="no pre-processing contract"):
        (tmp_path / "x.pt2").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
        load_exported(tmp_path / "x.pt2")


def test_export_cli_then_predict_with_the_pt2_file(tmp_path, capsys):
    import cv2
    import numpy as np

    from sapiens2.cli.main import main

    ckpt = tmp_path / "seg.safetensors"
    sapiens2.save_model(_tiny("seg"), ckpt)
    out = tmp_path / "seg.pt2"
    argv = ["export", "--task", "seg", "--model", str(ckpt), "--out", str(out)]
    assert main([*argv, "--input-size", "64", "48"]) == 0
    assert "seg, input image 1x3x64x48 float32" in capsys.readouterr().out
    assert main([*argv[:-2], "--out", str(tmp_path / "seg.onnx"), "--format", "pt2"]) == 2
    assert main(["export", "--task", "pose", "--model", str(ckpt), "--out", str(out)]) == 2

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (80, 60, 3), np.uint8))
    common = ["predict", "--task", "seg", "--device", "cpu", "--no-pictures", str(image)]
    assert main([*common, "--model", str(out), "--out", str(tmp_path / "pt2")]) == 0
    more = ["--input-size", "64", "48", "--dtype", "fp32"]
    assert main([*common, "--model", str(ckpt), *more, "--out", str(tmp_path / "ckpt")]) == 0
    got, ref = (cv2.imread(str(tmp_path / d / "a_seg.png"), -1) for d in ("pt2", "ckpt"))
    assert got.shape == ref.shape == (80, 60)
    assert (got == ref).mean() > 0.999  # argmax of near-equal logits
