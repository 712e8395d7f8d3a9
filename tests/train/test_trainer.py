"""The fine-tuning loop: learning, exact resume (also after kill -9), the non-finite guard, the
command's one-line errors, export, and FSDP2 across two processes."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
from tests.conftest import run_cli_in_child

import sapiens2
from sapiens2.checkpoints import read_state_dict
from sapiens2.cli.main import main
from sapiens2.cli.train import parse_sets
from sapiens2.train import trainer as trainer_module
from sapiens2.train.checkpointing import complete_checkpoints, latest_checkpoint, save_checkpoint
from sapiens2.train.core import NonFiniteError
from sapiens2.train.optim import Schedule, layer_id, param_groups
from sapiens2.train.recipes import get_recipe
from sapiens2.train.trainer import train

# 96x64 inputs: a 6x4 token grid for the tiny arch; small enough for CI.
SMALL = {"input_size": (96, 64), "batch_size": 4, "log_every": 1, "vis_every": 0, "val_every": 0}


def small(name: str, **over):
    return get_recipe(name).with_overrides({**SMALL, **over})


def cli_args(recipe: str, data, out, **over) -> list[str]:
    """``sapiens2 train`` arguments for the SMALL settings plus ``over`` (no ``--out`` if None)."""
    sets = [f"{k}={v}".replace(" ", "") for k, v in {**SMALL, **over}.items()]
    where = ["--out", str(out)] if out is not None else []
    return ["train", "--recipe", recipe, "--data", str(data), *where, "--device", "cpu",
            *[a for s in sets for a in ("--set", s)]]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the tiny models are latency-bound, and on a shared 2-core machine one
    thread costs several times less CPU than two (no spinning workers); the kill test also
    compares against children that run with one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_seg_loss_goes_down_and_export_loads(synth_data, tmp_path):
    recipe = small(
        "seg-tiny", max_steps=40, warmup_steps=5, lr=3e-3, val_every=40, vis_every=40, augment=False
    )
    res = train(recipe, synth_data, tmp_path / "run")
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 40
    assert sum(losses[-8:]) / 8 < 0.92 * sum(losses[:8]) / 8, losses
    model = sapiens2.load_model(tmp_path / "run" / "model.safetensors")
    assert model.task == "seg" and model.arch.name == "sapiens2_tiny"
    assert {"aAcc", "mIoU", "mAcc"} <= set(res.val)
    assert (tmp_path / "run" / "vis" / "train_000040.png").is_file()
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 40 and "val" in lines[-1]
    assert [x["step"] for x in lines if "loss" in x] == list(range(1, 41))
    assert {"loss", "ce", "dice", "grad_norm", "lr", "sec_per_step"} <= set(lines[0])


def test_grad_accumulation_equals_the_large_batch(synth_data, tmp_path):
    # Pose MSE is a mean over equally sized samples, so 2 micro-batches of 2 give the same loss and
    # gradient as one batch of 4: the second step (after one update) must agree too.
    big = train(small("pose-tiny", max_steps=3, batch_size=4), synth_data, tmp_path / "big")
    acc = train(
        small("pose-tiny", max_steps=3, batch_size=2, grad_accum=2), synth_data, tmp_path / "acc"
    )
    for a, b in zip(big.history, acc.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


@pytest.mark.slow  # seven (four) forked runs killed and resumed
@pytest.mark.skipif(sys.platform != "linux", reason="fork and SIGKILL")
def test_kill_9_at_any_moment_then_resume_auto_continues_exactly(synth_data, tmp_path):
    """A real process SIGKILLs itself at six moments (four inside a checkpoint write, one between
    checkpoints, one while pruning); each time `--resume auto` continues from the newest complete
    checkpoint and every logged step repeats the uninterrupted run's losses."""
    over = {"max_steps": 6, "save_every": 2, "warmup_steps": 1}
    ref = train(small("pose-tiny", **over), synth_data, tmp_path / "ref")
    by_step = {h["step"]: h for h in ref.history}
    out = tmp_path / "run"
    root = out / "checkpoints"
    argv = cli_args("pose-tiny", synth_data, out, **over)
    moments = [  # (where, newest complete checkpoint after the kill, what the kill left)
        ("ckpt-begin@4", 2, ".step_00000004.partial"),  # an empty folder
        ("ckpt-dcp@4", 2, ".step_00000004.partial"),  # DCP files, no rank state or manifest
        ("ckpt-manifest@4", 2, ".step_00000004.partial"),  # complete, not yet renamed
        ("ckpt-renamed@4", 4, None),  # renamed, before pruning
        ("step@5", 4, None),  # after step 5's update, before its log line
        ("ckpt-prune@6", 6, ".step_00000002.trash"),  # step 2 moved aside, not yet deleted
    ]
    for where, newest, left in moments:
        assert run_cli_in_child(argv, {"SAPIENS2_FAULT": where}) == -signal.SIGKILL, where
        assert latest_checkpoint(root).step == newest, where
        assert left is None or (root / left).is_dir(), where
    assert run_cli_in_child(argv) == 0  # at step 6 = max_steps: exports
    assert sorted(p.name for p in root.iterdir()) == ["step_00000004", "step_00000006"]
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 3, 4, 3, 4, 3, 4, 5, 6]
    for r in rows:
        for k in ("loss", "grad_norm", "lr"):
            assert r[k] == pytest.approx(by_step[r["step"]][k], rel=1e-6), (r["step"], k)
    got = read_state_dict(out / "model.safetensors")
    want = read_state_dict(tmp_path / "ref" / "model.safetensors")
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)


def _poison(monkeypatch, at_call: int, what: str) -> None:
    """Makes the recipe loss non-finite from its ``at_call``-th call (``what="loss"``), or gives
    it a NaN gradient at exactly that call with a finite value (``what="grad"``)."""
    real, calls = trainer_module.recipe_loss, [0]

    def poisoned(recipe):
        fn = real(recipe)

        def loss(pred, batch):
            out = fn(pred, batch)
            calls[0] += 1
            if what == "loss" and calls[0] >= at_call:
                out = {k: v * float("nan") for k, v in out.items()}
            if what == "grad" and calls[0] == at_call:
                p = pred[0] if isinstance(pred, tuple) else pred
                zero = p.sum() - p.sum().detach()  # 0, with gradient 1
                out["loss"] = out["loss"] + 0.0 * torch.sqrt(zero)  # d/dx: 0 * inf = nan
            return out

        return loss

    monkeypatch.setattr(trainer_module, "recipe_loss", poisoned)


def test_non_finite_loss_exits_non_zero_after_the_last_good_checkpoint(
    synth_data, tmp_path, monkeypatch, capsys
):
    _poison(monkeypatch, 3, "loss")
    out = tmp_path / "run"
    assert main(cli_args("pose-tiny", synth_data, out, max_steps=6, save_every=2)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "step 3: the loss is not finite" in err and "step_00000002" in err, err
    assert [m.step for m in complete_checkpoints(out / "checkpoints")] == [2]
    assert not (out / "model.safetensors").exists()


def test_non_finite_gradient_is_caught_at_a_save_between_logged_steps(
    synth_data, tmp_path, monkeypatch
):
    _poison(monkeypatch, 4, "grad")
    recipe = small("pose-tiny", max_steps=6, save_every=2, log_every=5)
    with pytest.raises(NonFiniteError, match="step 4: the gradient norm is not finite"):
        train(recipe, synth_data, tmp_path / "run")
    assert [m.step for m in complete_checkpoints(tmp_path / "run" / "checkpoints")] == [2]
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_command_errors_are_one_line_and_name_the_fix(synth_data, tmp_path, capsys):
    def error(argv) -> str:
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sapiens2 "), lines
        return lines[0]

    out = tmp_path / "run"
    assert "recipe key lr: must be a finite number, got inf" in error(
        cli_args("pose-tiny", synth_data, out, lr="1e999")
    )
    assert "grad_accum: must be >= 1" in error(cli_args("pose-tiny", synth_data, out, grad_accum=0))
    (tmp_path / "file").write_text("")
    assert "is a file" in error(cli_args("pose-tiny", synth_data, tmp_path / "file"))
    assert "pass --set batch_size=18 (or smaller)" in error(
        cli_args("pose-tiny", synth_data, out, batch_size=32)
    )
    # checkpoints of another recipe / another kind of run, and a planted metadata pickle
    model = torch.nn.Linear(2, 2)
    for kind, recipe in (("train", "seg-tiny"), ("pretrain", "tiny")):
        other = tmp_path / f"other_{kind}"
        save_checkpoint(other / "checkpoints", 3, model, None, kind=kind, recipe=recipe,
                        loader={}, rank_state={})  # fmt: skip
        msg = error(cli_args("pose-tiny", synth_data, other))
        assert ("recipe 'seg-tiny', not 'pose-tiny'" if kind == "train" else "is a pretrain") in msg
    assert "--resume auto" in error(
        [*cli_args("pose-tiny", synth_data, tmp_path / "other_train"), "--resume", "none"]
    )
    planted = tmp_path / "planted"
    path = save_checkpoint(planted / "checkpoints", 3, model, None, kind="train",
                           recipe="pose-tiny", loader={}, rank_state={})  # fmt: skip
    marker = tmp_path / "code_ran"
    data = pickle.dumps(_Hostile(marker))
    (path / ".metadata").write_bytes(data)
    manifest = json.loads((path / "checkpoint.json").read_text())
    manifest["files"][".metadata"] = len(data)
    (path / "checkpoint.json").write_text(json.dumps(manifest))
    assert "refusing to load" in error(cli_args("pose-tiny", synth_data, planted))
    assert not marker.exists()


class _Hostile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on linux")
def test_fsdp2_two_processes_match_one_process_and_resume(synth_data, tmp_path):
    # clip_grad 0.1 < the gradient norms (~0.5): clipping of sharded gradients is exercised
    over = {"max_steps": 3, "save_every": 2, "warmup_steps": 1, "clip_grad": 0.1}
    single = train(small("pose-tiny", batch_size=4, **over), synth_data, tmp_path / "one")
    worker = os.path.join(os.path.dirname(__file__), "_fsdp_worker.py")
    argv = cli_args("pose-tiny", synth_data, None, batch_size=2, strategy="fsdp2", **over)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           worker, str(tmp_path), *argv]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def rows(out):
        lines = (out / "log.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines if '"loss"' in x]

    two, again = rows(tmp_path / "two"), rows(tmp_path / "three")
    assert [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(single.history, two, strict=True):  # the same global batch of 4
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), (a, b)
        assert a["grad_norm"] > 0.2  # clipped
    assert [r["step"] for r in again] == [3]  # resumed from the step-2 checkpoint
    for a, b in zip(two[2:], again, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), (a, b)
    model = sapiens2.load_model(tmp_path / "two" / "model.safetensors")
    assert model.task == "pose"


def test_layer_wise_decay_groups():
    model = sapiens2.create_model("sapiens2_tiny", task="seg", device="meta")
    depth = model.arch.depth
    assert layer_id("backbone.cls_token", depth) == 0
    assert layer_id("backbone.patch_embed.projection.weight", depth) == 0
    assert layer_id("backbone.blocks.3.attn.wq.weight", depth) == 4
    assert layer_id("backbone.ln1.weight", depth) == depth + 1
    assert layer_id("decode_head.conv_seg.weight", depth) == depth + 1
    groups = param_groups(model, lr=1.0, weight_decay=0.1, layer_decay=0.5, depth=depth)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["decode_head.conv_seg.weight"]["lr"] == 1.0
    assert by_name["backbone.blocks.17.attn.wq.weight"]["lr"] == 0.5
    assert by_name["backbone.cls_token"]["lr"] == 0.5 ** (depth + 1)
    assert by_name["backbone.blocks.0.attn.wq.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.0.ln1.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.storage_tokens"]["weight_decay"] == 0.1  # official: tokens are decayed
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_schedule_warmup_then_linear_decay():
    s = Schedule(total_steps=100, warmup_steps=10, start_factor=1e-3)
    assert s.factor(0) == pytest.approx(1e-3)
    assert s.factor(10) == pytest.approx(1.0)
    assert s.factor(55) == pytest.approx(0.5)
    assert s.factor(100) == pytest.approx(0.0)


def test_recipes_and_overrides():
    r = get_recipe("pose-1b")
    assert (r.lr, r.layer_decay, r.clip_grad, r.max_steps, r.strategy) == (
        5e-4,
        0.9,
        4.0,
        20000,
        "fsdp2",
    )
    assert get_recipe("pointmap-0.4b").precision == "fp32"
    r2 = r.with_overrides(parse_sets(["max_steps=7", "input_size=(512, 384)", "compile=true"]))
    assert (r2.max_steps, r2.input_size, r2.compile) == (7, (512, 384), True)
    with pytest.raises(KeyError, match="unknown recipe key"):
        r.with_overrides({"max_stepz": "3"})
    with pytest.raises(ValueError, match="expected int"):
        r.with_overrides({"max_steps": "3.5"})
    with pytest.raises(KeyError, match="unknown recipe"):
        get_recipe("seg-2b")
    assert get_recipe("seg-1b-4k").input_size == (4096, 3072)
    with pytest.raises(ValueError, match="key=value"):
        parse_sets(["max_steps"])


def test_pose_sigma_reaches_the_training_targets(synth_data):
    """``pose_sigma`` (tiny: 3) sets the Gaussian of the training heatmaps; 0 is the official 6
    at 256-high heatmaps scaled to the heatmap size."""
    from sapiens2.evaluation import adapter_for

    assert get_recipe("pose-tiny").pose_sigma == 3.0 and get_recipe("pose-1b").pose_sigma == 0.0
    widths = {}
    for sigma in (0.0, 3.0):
        ds = adapter_for("pose", pose_sigma=sigma).dataset(
            synth_data, "train", True, (128, 96), 0, False
        )
        assert ds.sigma == (sigma or 6.0 * 128 / 1024)
        hm = ds[0]["heatmaps"]
        widths[sigma] = float((hm > 0.5).sum(dim=(1, 2)).float().max())  # pixels above half max
    assert widths[3.0] > 4 * widths[0.0]


def test_pose_ohkm_topk_selects_the_hard_keypoint_loss():
    from sapiens2.train.losses.pose import keypoint_mse_loss, keypoint_ohkm_mse_loss
    from sapiens2.train.trainer import recipe_loss

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 308, 8, 6, generator=g), torch.rand(2, 308, 8, 6, generator=g)
    batch = {"heatmaps": target, "keypoint_weights": torch.rand(2, 308, generator=g)}
    kw = batch["keypoint_weights"]
    official = recipe_loss(get_recipe("pose-1b"))(pred, batch)
    assert set(official) == {"mse", "loss"}
    torch.testing.assert_close(official["loss"], keypoint_mse_loss(pred, target, kw))
    hard = recipe_loss(get_recipe("pose-1b").with_overrides({"pose_ohkm_topk": "17"}))(pred, batch)
    assert set(hard) == {"ohkm", "loss"}
    torch.testing.assert_close(hard["loss"], keypoint_ohkm_mse_loss(pred, target, kw, topk=17))
    assert hard["loss"] > official["loss"]  # the mean of the hardest 17 exceeds the mean of all
    seg = recipe_loss(get_recipe("seg-tiny").with_overrides({"pose_ohkm_topk": "17"}))
    assert set(seg(torch.rand(1, 29, 4, 4), {"seg": torch.zeros(1, 4, 4, dtype=torch.long)})) >= {
        "ce",
        "dice",
    }
    with pytest.raises(ValueError, match="pose_ohkm_topk"):
        recipe_loss(get_recipe("pose-1b").with_overrides({"pose_ohkm_topk": "-1"}))


def test_init_from_pretrain_checkpoint(tmp_path):
    from sapiens2.train.trainer import init_from

    pre = sapiens2.create_model("sapiens2_tiny")
    sapiens2.save_model(pre, tmp_path / "pre.safetensors")
    model = sapiens2.create_model("sapiens2_tiny", task="normal")
    init_from(model, tmp_path / "pre.safetensors")
    assert torch.equal(model.backbone.blocks[5].ffn.w3.weight, pre.blocks[5].ffn.w3.weight)
    wrong = sapiens2.create_model("sapiens2_tiny", depth=4)
    sapiens2.save_model(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="backbone"):
        init_from(model, tmp_path / "wrong.safetensors")


def test_head_width_widens_every_head_stage_and_the_export_keeps_it(synth_data, tmp_path):
    from sapiens2.models import default_head_config, get_arch, widen_head
    from sapiens2.train.trainer import recipe_model

    official = default_head_config("pose", get_arch("sapiens2_tiny"))
    assert official.conv_channels[-1] == 8  # the official tiny head's bottleneck
    wide = widen_head(official, 48)
    assert wide.deconv_channels == (48, 48) and wide.conv_channels == (48, 48, 48)
    assert wide.deconv_kernels == official.deconv_kernels
    dense = widen_head(default_head_config("normal", get_arch("sapiens2_tiny")), 24)
    assert dense.upsample_channels == (24,) * 4 and dense.conv_channels == (24,) * 3
    with pytest.raises(ValueError, match="head width"):
        widen_head(official, 0)

    assert get_recipe("pose-tiny").head_width == 32 and get_recipe("pose-1b").head_width == 0
    recipe = small("pose-tiny", head_width=48, max_steps=2, warmup_steps=1)
    assert recipe_model(recipe).head_config == wide
    train(recipe, synth_data, tmp_path / "run")
    model = sapiens2.load_model(tmp_path / "run" / "model.safetensors")
    assert model.head_config == wide  # widths inferred back from the exported shapes
