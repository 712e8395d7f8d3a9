from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import run_cli_in_child

from sapiens2 import create_model, load_model, save_model
from sapiens2.checkpoints import read_state_dict
from sapiens2.cli.main import main
from sapiens2.models import Sapiens2
from sapiens2.pretrain.recipes import OptimConfig, get_recipe
from sapiens2.pretrain.trainer import Pretrainer, build_networks, lr_at, param_groups
from sapiens2.train.checkpointing import latest_checkpoint, save_checkpoint

from ._shards import write_image_shards

FAST = [
    "optim.lr=3e-3",
    "optim.warmup_steps=2",
    "distill.ema_momentum=0.9",
    "distill.num_prototypes=64",
    "mae.decoder_depth=1",
    "views.num_local=2",
    "save_every=1000",
    "log_every=1",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_image_shards(tmp_path_factory.mktemp("img") / "shards", 8)


def test_each_loss_term_decreases_and_exports_load(shards, tmp_path):
    recipe = get_recipe("tiny", [*FAST, "max_steps=12", "batch_size=8"])
    trainer = Pretrainer(recipe, shards, tmp_path)
    hist = trainer.train()
    assert len(hist) == 12
    for term in ("mae", "distill", "koleo"):
        first = sum(m[term] for m in hist[:3]) / 3
        last = sum(m[term] for m in hist[-4:]) / 4
        assert last < first, (term, [round(m[term], 4) for m in hist])
    assert all(math.isfinite(m["loss"]) for m in hist)
    student_path, teacher_path = trainer.export()
    student = load_model(student_path)
    teacher = load_model(teacher_path)
    assert isinstance(student, Sapiens2) and student.cfg.name == "sapiens2_tiny"
    ref = trainer.student.backbone.state_dict()
    for k, v in student.state_dict().items():
        assert torch.equal(v.float(), ref[k].float()), k
    ema = trainer.teacher.backbone.state_dict()
    assert torch.equal(teacher.blocks[0].attn.wq.weight, ema["blocks.0.attn.wq.weight"])
    assert not torch.equal(teacher.blocks[0].attn.wq.weight, student.blocks[0].attn.wq.weight)


def test_tiny_4k_pretrains_end_to_end(shards, tmp_path):
    recipe = get_recipe("tiny-4k", [*FAST, "max_steps=2", "batch_size=2", "views.num_local=1"])
    assert recipe.mae.target_scale == 0.5
    trainer = Pretrainer(recipe, shards, tmp_path)
    assert trainer.stride == 64 and trainer.target_patch == 32  # 2K target of a 4K model
    hist = trainer.train()
    assert [m["step"] for m in hist] == [1, 2]
    assert all(math.isfinite(m[k]) for m in hist for k in ("mae", "distill", "koleo"))
    student_path, _ = trainer.export()
    model = load_model(student_path)
    assert model.cfg.name == "sapiens2_tiny_4k" and model.tokenizer is not None


@pytest.mark.parametrize(
    ("sets", "terms"),
    [
        (["loss.distill=0", "loss.koleo=0"], {"mae"}),
        (["loss.mae=0"], {"distill", "koleo"}),
        (["distill.patch_loss=true"], {"mae", "distill", "koleo", "patch"}),
        (["precision=bf16", "activation_checkpointing=true"], {"mae", "distill", "koleo"}),
    ],
)
def test_ablations_switch_branches_off(shards, tmp_path, sets, terms):
    recipe = get_recipe("tiny", [*FAST, *sets, "max_steps=1", "batch_size=2"])
    student, _ = build_networks(recipe)
    assert (student.decoder is not None) == ("mae" in terms or "patch" in terms)
    assert (student.head is not None) == ("distill" in terms)
    (m,) = Pretrainer(recipe, shards, tmp_path).train()
    assert set(m) & {"mae", "distill", "koleo", "patch"} == terms
    assert all(math.isfinite(m[t]) for t in terms)


def test_lr_schedule_and_no_decay_groups():
    o = OptimConfig(lr=1e-3, min_lr=1e-6, warmup_steps=10)
    assert lr_at(0, o, 110) == pytest.approx(1e-4)
    assert lr_at(9, o, 110) == pytest.approx(1e-3)
    assert lr_at(10, o, 110) == pytest.approx(1e-3)
    assert lr_at(60, o, 110) == pytest.approx((1e-3 + 1e-6) / 2)
    assert lr_at(110, o, 110) == pytest.approx(1e-6)
    student, _ = build_networks(get_recipe("tiny"))
    decay, no_decay = param_groups(student, 0.05)
    ids = {id(p) for p in no_decay["params"]}
    named = dict(student.named_parameters())
    for name in (
        "backbone.cls_token",
        "backbone.storage_tokens",
        "decoder.mask_token",
        "backbone.blocks.0.ln1.weight",
        "backbone.blocks.0.attn.wq.bias",
        "backbone.blocks.0.attn.gamma.weight",
    ):
        assert id(named[name]) in ids, name
    assert id(named["backbone.blocks.0.attn.wq.weight"]) not in ids
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_prototypes_stay_frozen_for_the_configured_steps(shards, tmp_path):
    recipe = get_recipe(
        "tiny", [*FAST, "max_steps=3", "batch_size=4", "distill.freeze_prototypes_steps=2"]
    )
    trainer = Pretrainer(recipe, shards, tmp_path)
    start = trainer.student.head.prototypes.detach().clone()
    mlp = trainer.student.head.mlp[0].weight.detach().clone()
    trainer.train(max_steps=2, resume=None)
    assert torch.equal(trainer.student.head.prototypes, start)  # frozen, not even decayed
    assert not torch.equal(trainer.student.head.mlp[0].weight, mlp)  # the rest of the head learns
    trainer.train(max_steps=3, resume=None)
    assert not torch.equal(trainer.student.head.prototypes, start)
    with pytest.raises(ValueError, match="freeze_prototypes_steps must be >= 0"):
        get_recipe("tiny", ["distill.freeze_prototypes_steps=-1"])


@pytest.mark.slow  # seven (four) forked runs killed and resumed
@pytest.mark.skipif(sys.platform != "linux", reason="fork and SIGKILL")
def test_kill_9_then_resume_auto_continues_exactly(shards, tmp_path):
    """Killed during the first checkpoint write (nothing complete yet: a fresh start), between
    checkpoints, and before a write's rename: every logged step repeats the uninterrupted run, and
    the exported student and teacher are the same (teacher EMA, centres, loader and RNG resumed)."""
    sets = [*FAST, "max_steps=4", "save_every=2", "batch_size=2"]
    ref = Pretrainer(get_recipe("tiny", sets), shards, tmp_path / "ref")
    by_step = {m["step"]: m for m in ref.train()}
    ref.export()
    out = tmp_path / "run"
    argv = ["pretrain", "--recipe", "tiny", "--data", str(shards), "--out", str(out),
            "--device", "cpu", *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    for where, newest in (("ckpt-dcp@2", None), ("step@4", 2), ("ckpt-manifest@4", 2)):
        assert run_cli_in_child(argv, {"SAPIENS2_FAULT": where}) == -signal.SIGKILL, where
        found = latest_checkpoint(out / "checkpoints")
        assert (found.step if found else None) == newest, where
    assert run_cli_in_child(argv) == 0
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 1, 2, 3, 3, 4, 3, 4]
    for r in rows:
        want = by_step[r["step"]]
        for k in ("loss", "mae", "distill", "koleo", "grad_norm", "lr", "teacher_temp"):
            assert r[k] == pytest.approx(want[k], rel=1e-6), (r["step"], k)
    for which in ("student", "teacher"):
        got = read_state_dict(out / f"{which}.safetensors")
        want = read_state_dict(tmp_path / "ref" / f"{which}.safetensors")
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)


def test_pretrain_flags_init_resume_and_errors(shards, tmp_path, capsys):
    # --init: student and teacher backbones start from the given backbone
    source = create_model("sapiens2_tiny")
    with torch.no_grad():
        source.blocks[3].attn.wq.weight.mul_(-1)
    save_model(source, tmp_path / "init.safetensors")
    recipe = get_recipe("tiny", [*FAST, "max_steps=1", "batch_size=2"])
    trainer = Pretrainer(recipe, shards, tmp_path / "a", init=tmp_path / "init.safetensors")
    for net in (trainer.student, trainer.teacher):
        assert torch.equal(net.backbone.blocks[3].attn.wq.weight, source.blocks[3].attn.wq.weight)

    def error(argv) -> str:
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    base = ["pretrain", "--recipe", "tiny", "--data", str(shards), "--device", "cpu",
            "--set", "batch_size=2"]  # fmt: skip
    out = tmp_path / "b"
    save_checkpoint(out / "checkpoints", 1, torch.nn.Linear(2, 2), None, kind="train",
                    recipe="seg-tiny", loader={}, rank_state={})  # fmt: skip
    assert "is a train checkpoint" in error([*base, "--out", str(out)])
    assert "already holds checkpoints" in error([*base, "--out", str(out), "--no-resume"])
    assert "pass --set batch_size=8 (or smaller)" in error(
        [*base, "--out", str(tmp_path / "c"), "--set", "batch_size=9"]
    )
    assert "recipe key optim.lr: must be a finite number" in error(
        [*base, "--out", str(tmp_path / "c"), "--set", "optim.lr=1e999"]
    )
