"""Output shapes and input sizes of the five task models (parity: test_golden.py)."""

import pytest
import torch
from tests.conftest import official, small_pointmap_model

import sapiens2


def test_output_shapes_per_task():
    x = torch.randn(1, 3, 128, 96)  # any multiple of the 16-pixel patch
    shapes = {"pose": (1, 308, 32, 24), "seg": (1, 29, 128, 96), "normal": (1, 3, 128, 96)}
    shapes["albedo"] = (1, 3, 128, 96)
    for task, shape in shapes.items():
        model = sapiens2.create_model("sapiens2_tiny", task=task)
        with torch.no_grad():
            assert model(x).shape == shape
    pm = sapiens2.create_model("sapiens2_tiny", task="pointmap")
    assert pm.input_size == (512, 384)
    with pytest.raises(ValueError, match="512x384"):
        pm(x)
    small = small_pointmap_model((8, 6))  # the same head for 128x96 inputs (cheaper)
    assert small.input_size == (128, 96)
    with torch.no_grad():
        points, scale = small(torch.randn(2, 3, 128, 96))
    assert points.shape == (2, 3, 128, 96) and scale.shape == (2, 1)


def test_pointmap_input_size_inferred_from_scale_branch():
    path, _, cfg = official("tiny_pointmap")
    model = sapiens2.load_model(path)
    assert model.input_size == tuple(cfg["img_size"])
