from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sapiens2 import load_model
from sapiens2.models import Sapiens2
from sapiens2.pretrain.recipes import OptimConfig, get_recipe
from sapiens2.pretrain.trainer import Pretrainer, build_networks, lr_at, param_groups

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
