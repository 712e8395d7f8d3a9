"""Shared test helpers: the official golden fixtures copied into tests/fixtures/official."""

from __future__ import annotations

import json
import os
from pathlib import Path

# OpenMP threads that wait for work sleep instead of spinning. The suite runs thousands of tiny
# parallel regions; with spinning, the idle thread of a 2-core machine burns as much CPU time as
# the working one (and on a machine shared with other jobs several times the actual work). Must
# be set before torch loads libgomp; child processes (FSDP workers, the CLI) inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official"


def official(name: str) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """(weights path, io tensors, config) of an official fixture such as ``tiny_seg``.

    The io tensors are the official code's float64 run (``<name>.io64.safetensors``): the
    float32 ``input`` and float64 ``output.<i>``, with RoPE computed in bfloat16 as in float32.
    """
    return (
        OFFICIAL / f"{name}.safetensors",
        load_file(OFFICIAL / f"{name}.io64.safetensors"),
        json.loads((OFFICIAL / f"{name}.json").read_text()),
    )


def rel_errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """``(max|out - ref|, mean|out - ref|) / max|ref|``, computed in float64."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    d = (out.double() - ref.double()).abs()
    scale = ref.double().abs().max().item()
    return d.max().item() / scale, d.mean().item() / scale


def assert_close_rel(
    out: torch.Tensor, ref: torch.Tensor, max_rel: float, mean_rel: float | None = None
) -> tuple[float, float]:
    """Asserts ``max|out - ref| <= max_rel * max|ref|`` (and the mean bound when given)."""
    mx, mean = rel_errors(out, ref)
    ok = mx <= max_rel and (mean_rel is None or mean <= mean_rel)
    assert ok, f"max rel {mx:.3g} (bound {max_rel:g}), mean rel {mean:.3g} (bound {mean_rel})"
    return mx, mean


def small_pointmap_model(token_grid: tuple[int, int] = (4, 3)):
    """A random tiny pointmap model for a small fixed input (``16 * token_grid``, 64x48 by
    default) instead of the tiny arch's 512x384: the same head, 64x fewer pixels."""
    import sapiens2
    from sapiens2.models.heads import PointmapHeadConfig

    convs, (h, w) = [], token_grid
    for c in (32, 16, 8):  # stride-2 convs while the instance norms still see 2x2 or more
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        if min(h, w) < 2:
            break
        convs.append(c)
    head = PointmapHeadConfig(
        upsample_channels=(32, 16, 16, 8),
        conv_channels=(8, 8, 4),
        scale_conv_channels=tuple(convs),
        scale_hidden=(16, 8),
        token_grid=token_grid,
    )
    return sapiens2.create_model("sapiens2_tiny", task="pointmap", head=head)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small synthetic-humans dataset (18 train / 6 val images at 96x64), rendered once."""
    from sapiens2.data.synth.render import SynthConfig
    from sapiens2.data.synth.writer import WriteConfig, write_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(
        WriteConfig(
            root, num=24, seed=3, val_fraction=0.25, render=SynthConfig(96, 64, people_max=1)
        )
    )
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Random-weight ``sapiens2_tiny`` pose and seg checkpoints (seed 0 each), saved once:
    ``{task: path}``, for the command-line tests."""
    import sapiens2

    root = tmp_path_factory.mktemp("tiny_models")
    paths = {}
    for task in ("pose", "seg"):
        torch.manual_seed(0)
        paths[task] = root / f"{task}.safetensors"
        sapiens2.save_model(sapiens2.create_model("sapiens2_tiny", task=task), paths[task])
    return paths


RTMDET = FIXTURES / "rtmdet"


@pytest.fixture(scope="session")
def tiny_detector():
    """The random-weight tiny RTMDet of the mmdet-made fixture (``fixtures/rtmdet``)."""
    from sapiens2.detect import load_detector

    return load_detector(RTMDET / "rtmdet_tiny_person_random.pth")


@pytest.fixture(scope="session")
def fixture_rgb():
    """The fixture image read like the official demo (cv2.imread -> BGR), flipped to RGB."""
    import cv2
    import numpy as np

    path = RTMDET / "rtmdet_tiny_person_random.png"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


@pytest.fixture(scope="session")
def fixture_detections(tiny_detector, fixture_rgb):
    """``tiny_detector(fixture_rgb)``, computed once: (boxes (100, 4), scores (100,))."""
    return tiny_detector(fixture_rgb)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def video_frames(path) -> list:
    """Every frame of a video file as OpenCV decodes it (BGR uint8 arrays)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def run_cli_in_child(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Runs ``sapiens2 ARGV`` in a forked child process (with this process's imports, one torch
    thread) and returns its exit code: negative for a signal, e.g. -9 after a SIGKILL (Linux)."""
    import multiprocessing
    import os
    import sys

    def child() -> None:
        from sapiens2.cli.main import main

        os.environ.update(env or {})
        torch.set_num_threads(1)
        sys.exit(main(argv))

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join()
    return proc.exitcode
