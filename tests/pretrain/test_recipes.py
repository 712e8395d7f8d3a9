from __future__ import annotations

import pytest

from sapiens2.models import get_arch
from sapiens2.pretrain.recipes import RECIPES, get_recipe


def test_every_recipe_names_a_known_arch_and_fits_its_stride():
    for name in RECIPES:
        r = get_recipe(name)
        arch = get_arch(r.arch)
        s = arch.stride
        assert r.views.global_size[0] % s == 0 and r.views.global_size[1] % s == 0, name
        assert r.views.local_size[0] % s == 0 and r.views.local_size[1] % s == 0, name
        r.mae.target_patch(s)  # a whole number of pixels


def test_paper_defaults():
    r = get_recipe("1b")
    assert (r.loss.mae, r.loss.distill, r.loss.koleo) == (1.0, 0.4, 0.04)
    assert (r.mask.ratio, r.mask.block_prob) == (0.75, 0.4)
    assert (r.mae.decoder_depth, r.mae.decoder_dim, r.mae.norm_pix) == (8, 512, True)
    d = r.distill
    assert (d.student_temp, d.teacher_temp_warmup, d.teacher_temp) == (0.1, 0.065, 0.07)
    assert (d.center_momentum, d.ema_momentum, d.teacher_temp_warmup_steps) == (0.9, 0.992, 1000)
    o = r.optim
    assert (o.lr, o.betas, o.weight_decay, o.clip_grad, o.min_lr) == (
        1e-4,
        (0.9, 0.95),
        0.05,
        5.0,
        1e-7,
    )
    assert (r.views.num_global, r.views.num_local) == (2, 4)
    assert r.views.global_scale == (0.5, 1.0) and r.views.local_scale == (0.2, 0.7)
    assert r.precision == "bf16" and r.activation_checkpointing
    r4 = get_recipe("1b-4k")
    assert r4.views.global_size == (4096, 3072) and r4.mae.target_scale == 0.5


def test_overrides():
    r = get_recipe(
        "tiny",
        [
            "max_steps=7",
            "optim.lr=3e-4",
            "loss.koleo=0",
            "views.global_size=256,192",
            "distill.ema_momentum_end=1",
            "distill.patch_loss=true",
            "strategy=fsdp2",
        ],
    )
    assert r.max_steps == 7 and r.optim.lr == 3e-4 and r.loss.koleo == 0.0
    assert r.views.global_size == (256, 192)
    assert r.distill.ema_momentum_end == 1.0 and r.distill.patch_loss
    assert get_recipe("tiny", ["distill.ema_momentum_end=none"]).distill.ema_momentum_end is None
    assert "optim.lr" in r.field_keys() and "max_steps" in r.field_keys()


@pytest.mark.parametrize(
    ("item", "error", "match"),
    [
        ("max_stepz=3", KeyError, "unknown recipe key 'max_stepz'"),
        ("optim.lrr=3", KeyError, "optim.lrr"),
        ("optim=3", KeyError, "section"),
        ("max_steps=3.5", ValueError, "expected int"),
        ("views.global_size=256", ValueError, "tuple"),
        ("strategy=zero3", ValueError, "strategy"),
        ("max_steps", ValueError, "key=value"),
        ("mask.ratio=1.5", ValueError, "ratio"),
    ],
)
def test_bad_overrides_are_errors(item, error, match):
    with pytest.raises(error, match=match):
        get_recipe("tiny", [item])


def test_patch_term_needs_both_branches():
    with pytest.raises(ValueError, match="patch_loss"):
        get_recipe("tiny", ["loss.mae=0", "distill.patch_loss=true"])


def test_unknown_recipe():
    with pytest.raises(KeyError, match="known: tiny"):
        get_recipe("2b")
