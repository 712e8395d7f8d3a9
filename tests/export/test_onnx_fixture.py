"""The official tiny pose fixture exported to ONNX: the bfloat16 RoPE casts are in the graph, ONNX
Runtime on CPU matches our eager float32 and float64 forwards, and the contract describes it."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from tests.export.conftest import (
    MAX_REL,
    MEAN_REL,
    assert_export_close,
    bf16_casts,
    export_errors,
)

import sapiens2
from sapiens2.export import Contract, contract_path, read_contract

pytestmark = pytest.mark.slow  # one ONNX export of an 18-block model (~10 s of CPU)


def _fp32_rope_twin(model: sapiens2.TaskModel) -> sapiens2.TaskModel:
    """The same weights with the RoPE computed in float32 (the recipe lost)."""
    from dataclasses import replace

    from sapiens2.models import build_model

    twin = build_model(replace(model.arch, rope_dtype="fp32"), model.task, model.head_config)
    sd = {k: v.float() if k.endswith("periods") else v for k, v in model.state_dict().items()}
    twin.load_state_dict(sd)
    twin.backbone.rope_embed.reset_parameters()  # float32 periods, not bf16 values upcast
    return twin.eval()


def test_graph_keeps_one_bf16_rounding_per_rope_step(pose_onnx):
    path, _, model, _ = pose_onnx
    # per block, q and k each: rounded input, two products, their sum
    assert bf16_casts(path) == 2 * 4 * model.arch.depth


def test_onnx_runtime_matches_eager_fp32_and_fp64(pose_onnx):
    import onnxruntime as ort

    path, _, model, io = pose_onnx
    x = io["input"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    got = torch.from_numpy(got)
    with torch.no_grad():
        eager32 = model(x)
        eager64 = copy.deepcopy(model).double()(x.double())  # RoPE roundings kept (bf16)
        lost = _fp32_rope_twin(model)(x)
    assert_export_close(got, eager32, "ONNX Runtime vs eager fp32")
    assert_export_close(got, eager64, "ONNX Runtime vs eager fp64")
    # the tolerance tells the recipe from its loss: float32 RoPE is outside it
    mx, mean = export_errors(lost, eager64)
    assert mx > MAX_REL and mean > MEAN_REL, (mx, mean)


def test_contract_next_to_the_file_and_inside_it(pose_onnx):
    import onnx

    path, contract, _, _ = pose_onnx
    side = contract_path(path)
    assert side.name == "tiny_pose.onnx.json"
    data = json.loads(side.read_text())
    assert data["kind"] == "pose" and data["file_format"] == "onnx"
    assert data["input"] == {"name": "image", "shape": [1, 3, 256, 192], "dtype": "float32"}
    assert data["outputs"] == [{"name": "heatmaps", "shape": [1, 308, 64, 48], "dtype": "float32"}]
    assert data["layout"] == "NCHW" and data["channel_order"] == "RGB"
    assert data["mean"] == [123.675, 116.28, 103.53] and data["std"] == [58.395, 57.12, 57.375]
    assert data["rope"] == "bf16" and data["model"]["arch"] == "sapiens2_tiny"
    assert data["sapiens2_version"] == sapiens2.__version__ and isinstance(data["opset"], int)
    assert data["source"].endswith("tiny_pose.safetensors")
    embedded = {p.key: p.value for p in onnx.load(str(path)).metadata_props}["sapiens2"]
    assert Contract.from_json(embedded) == contract == read_contract(path)


def test_predict_cli_runs_the_onnx_file_like_the_checkpoint(pose_onnx, tmp_path):
    import cv2

    from sapiens2.cli.main import main

    path, contract, _, _ = pose_onnx
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 255, (96, 64, 3), np.uint8))
    common = ["predict", "--task", "pose", "--device", "cpu", "--detector", "none"]
    common += ["--no-pictures", str(image)]
    assert main([*common, "--model", str(path), "--out", str(tmp_path / "onnx")]) == 0
    checkpoint = ["--model", contract.source, "--dtype", "fp32", "--out", str(tmp_path / "ckpt")]
    assert main([*common, *checkpoint]) == 0
    got, ref = (
        json.loads((tmp_path / d / "predictions.json").read_text())["frames"][0]["instances"][0]
        for d in ("onnx", "ckpt")
    )
    # keypoint scores are heatmap maxima: they move no more than the heatmaps do
    s_got, s_ref = np.array(got["keypoint_scores"]), np.array(ref["keypoint_scores"])
    assert s_got.shape == (308,)
    assert np.abs(s_got - s_ref).max() <= MAX_REL * np.abs(s_ref).max() + 1e-4  # + JSON rounding
    bad = ["--model", str(path), "--out", str(tmp_path / "x"), "--dtype", "bf16"]
    assert main([*common, *bad]) == 2  # the exported dtype cannot change
