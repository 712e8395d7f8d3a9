"""Golden parity of the five task models with the official estimators."""

import pytest
import torch
from tests.conftest import assert_parity, official

import sapiens2


@pytest.mark.parametrize("task", ["pose", "seg", "normal", "pointmap", "albedo"])
def test_task_outputs_match_reference(task):
    path, io, _cfg = official(f"tiny_{task}")
    model = sapiens2.load_model(path)
    assert isinstance(model, sapiens2.TaskModel) and model.task == task
    with torch.no_grad():
        out = model(io["input"])
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len([k for k in io if k.startswith("output.")])
    for i, o in enumerate(outs):
        assert_parity(o, io[f"output.{i}"])


def test_output_shapes_per_task():
    x = torch.randn(1, 3, 256, 192)
    shapes = {"pose": (1, 308, 64, 48), "seg": (1, 29, 256, 192), "normal": (1, 3, 256, 192)}
    shapes["albedo"] = (1, 3, 256, 192)
    for task, shape in shapes.items():
        model = sapiens2.create_model("sapiens2_tiny", task=task)
        with torch.no_grad():
            assert model(x).shape == shape
    pm = sapiens2.create_model("sapiens2_tiny", task="pointmap")
    assert pm.input_size == (512, 384)
    with torch.no_grad():
        points, scale = pm(torch.randn(2, 3, 512, 384))
    assert points.shape == (2, 3, 512, 384) and scale.shape == (2, 1)
    with pytest.raises(ValueError, match="512x384"):
        pm(x)


def test_pointmap_input_size_inferred_from_scale_branch():
    path, _, cfg = official("tiny_pointmap")
    model = sapiens2.load_model(path)
    assert model.input_size == tuple(cfg["img_size"])
