"""Dense probing on a frozen backbone, and the ``pretrain`` / ``probe`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sapiens2.cli.main import main
from sapiens2.data.synth.render import SynthConfig
from sapiens2.data.synth.writer import WriteConfig, write_dataset
from sapiens2.models import create_model
from sapiens2.pretrain.probe import ProbeConfig, run_probe

from ._shards import write_image_shards


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(
        WriteConfig(
            out=root,
            num=8,
            seed=3,
            val_fraction=0.25,
            render=SynthConfig(height=128, width=96, people_max=1),
        )
    )
    return root


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_probe_trains_a_head_and_leaves_the_backbone_frozen(dataset, task):
    torch.manual_seed(0)
    backbone = create_model("sapiens2_tiny", device="cpu")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    cfg = ProbeConfig(task=task, input_size=(128, 96), steps=30, batch_size=4, lr=3e-3)
    res = run_probe(backbone, dataset, cfg)
    again = run_probe(backbone, dataset, cfg)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in backbone.parameters())
    assert res["num_train"] > 0 and res["num_val"] > 0
    if task == "seg":
        assert 0.0 <= res["mIoU"] <= 100.0 and 0.0 <= res["aAcc"] <= 100.0
        assert 0.0 <= res["fgIoU"] <= 100.0
        assert res["mIoU"] == again["mIoU"]  # deterministic for a seed
    else:
        assert 0.0 <= res["AP"] <= 1.0 and 0.0 <= res["PCK@0.1"] <= 1.0
        assert res["PCK@0.1"] == again["PCK@0.1"]


def test_pretrain_and_probe_commands(dataset, tmp_path, capsys):
    shards = write_image_shards(tmp_path / "shards", 4)
    out = tmp_path / "run"
    sets = ["max_steps=1", "batch_size=2", "views.num_local=1", "mae.decoder_depth=1"]
    argv = ["pretrain", "--recipe", "tiny", "--data", str(shards), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    assert (out / "student.safetensors").is_file() and (out / "teacher.safetensors").is_file()
    assert json.loads((out / "recipe.json").read_text())["max_steps"] == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    capsys.readouterr()
    assert main([*argv, "--set", "optim.lrr=1"]) == 2
    assert "unknown recipe key 'optim.lrr'" in capsys.readouterr().err
    res_path = tmp_path / "probe.json"
    probe = ["probe", "--task", "seg", "--data", str(dataset), "--input-size", "128", "96"]
    probe += ["--steps", "5", "--model", str(out / "teacher.safetensors"), "--out", str(res_path)]
    assert main(probe) == 0
    assert "mIoU" in json.loads(res_path.read_text())


def test_pose_probe_head_starts_near_zero_heatmaps():
    """The pose probe's output layer starts at ~0, below the loss of an all-zero heatmap; the
    default init would start every pixel at noise of order 0.1-1."""
    import torch

    from sapiens2.pretrain.probe import ProbeHead

    torch.manual_seed(0)
    feats = torch.randn(4, 64, 16, 12)
    for hidden in (0, 32):
        quiet = ProbeHead(64, 308, hidden, near_zero=True).eval()(feats)
        loud = ProbeHead(64, 308, hidden).eval()(feats)
        assert quiet.abs().max() < 0.05 < loud.abs().mean(), (hidden, quiet.abs().max())
