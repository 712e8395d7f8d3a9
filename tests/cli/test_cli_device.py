"""Every command that runs a model reports an unavailable ``--device`` in one line and exits
non-zero, before it reads any input (no traceback from torch)."""

from __future__ import annotations

import pytest
import torch

from sapiens2.cli.main import main


def _argv(command: str, device: str, tmp) -> list[str]:
    missing = str(tmp / "missing")
    out = str(tmp / "out")
    return {
        "demo": ["demo", "--out", out, "--device", device],
        "features": ["features", missing, "--model", missing, "--out", out, "--device", device],
        "predict": ["predict", "--task", "seg", "--model", missing, "--out", out, missing,
                    "--device", device],
        "eval": ["eval", "--task", "seg", "--model", missing, "--data", missing, "--device", device],
        "train": ["train", "--recipe", "seg-tiny", "--data", missing, "--out", out,
                  "--device", device],
        "probe": ["probe", "--task", "seg", "--data", missing, "--random-init", "sapiens2_tiny",
                  "--device", device],
        "pretrain": ["pretrain", "--recipe", "tiny", "--data", missing, "--out", out,
                     "--set", f"device={device}"],
    }[command]  # fmt: skip


COMMANDS = ("demo", "features", "predict", "eval", "train", "probe", "pretrain")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("device", "gpus", "mps"),
    [("cuda", 0, False), ("cuda:7", 1, False), ("mps", 0, False), ("garbage", 0, False)],
)
def test_unavailable_device_is_one_line(monkeypatch, tmp_path, capsys, command, device, gpus, mps):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert main(_argv(command, device, tmp_path)) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"sapiens2 {command}: error: ") and f"'{device}'" in err[0]
    assert not (tmp_path / "out").exists()  # nothing was started
