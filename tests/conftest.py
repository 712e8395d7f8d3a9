"""Shared test helpers: the official golden fixtures copied into tests/fixtures/official."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official"


def official(name: str) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """(weights path, io tensors, config) of an official fixture such as ``tiny_seg``."""
    return (
        OFFICIAL / f"{name}.safetensors",
        load_file(OFFICIAL / f"{name}.io.safetensors"),
        json.loads((OFFICIAL / f"{name}.json").read_text()),
    )


def assert_parity(
    out: torch.Tensor, ref: torch.Tensor, max_rel=5e-4, mean_rel=5e-5
) -> tuple[float, float]:
    """The project's parity criterion: max|d| <= 5e-4 max|ref| and mean|d| <= 5e-5 max|ref|."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    scale = ref.abs().max().item()
    d = (out.float() - ref.float()).abs()
    mx, mean = d.max().item() / scale, d.mean().item() / scale
    assert mx <= max_rel and mean <= mean_rel, f"max rel {mx:.3g}, mean rel {mean:.3g}"
    return mx, mean


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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
