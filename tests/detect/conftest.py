"""Shared fixtures of the detector tests (golden data copied from the mmdet-made shared fixture).

``tiny_detector``, ``fixture_rgb`` and ``fixture_detections`` live in tests/conftest.py (the CLI
tests use them too).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rtmdet"
TINY_PTH = FIXTURES / "rtmdet_tiny_person_random.pth"
TINY_IO = FIXTURES / "rtmdet_tiny_person_random.io.safetensors"
TINY_PNG = FIXTURES / "rtmdet_tiny_person_random.png"
TINY_JSON = FIXTURES / "rtmdet_tiny_person_random.json"

MEAN_BGR = torch.tensor([103.53, 116.28, 123.675]).view(1, 3, 1, 1)
STD_BGR = torch.tensor([57.375, 57.12, 58.395]).view(1, 3, 1, 1)


@pytest.fixture(scope="session")
def rtmdet_files() -> dict[str, Path]:
    """Paths of the copied fixture files: ``pth``, ``io``, ``png``, ``json``."""
    return {"pth": TINY_PTH, "io": TINY_IO, "png": TINY_PNG, "json": TINY_JSON}


def _read_input_png(path: Path) -> torch.Tensor:
    """A normalized (1, 3, 640, 640) network input stored losslessly as the BGR PNG it came from."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return (torch.from_numpy(bgr).permute(2, 0, 1)[None].float() - MEAN_BGR) / STD_BGR


@pytest.fixture(scope="session")
def golden() -> dict[str, torch.Tensor]:
    """mmdet 3.3.0 outputs (see tests/fixtures/rtmdet/README.md for the stored layout)."""
    io = load_file(str(TINY_IO))
    io["raw.input"] = _read_input_png(FIXTURES / "raw_input_bgr.png")
    io["image.input"] = _read_input_png(FIXTURES / "image_input_bgr.png")
    return io
