"""The trainer core shared by `train` and `pretrain`: checkpoints that are complete or absent and
load without running code, the logging reduction on the backend's device, recipe validation."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from sapiens2.pretrain.recipes import get_recipe as pretrain_recipe
from sapiens2.train import distributed as dist_utils
from sapiens2.train.checkpointing import (
    CheckpointError,
    UnsafeCheckpointError,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    load_dcp,
    read_manifest,
    save_checkpoint,
)
from sapiens2.train.core import LossWindow, check_enough_data
from sapiens2.train.recipes import get_recipe


class _Planted:
    """A pickle that creates a file when unpickled (what a hostile checkpoint file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    return model, opt


def _save(root, step, model, opt, **kw):
    args = {"kind": "train", "recipe": "r", "loader": {"pos": step}, "keep": 0}
    args.update(kw)
    rank_state = {"rng": torch.Generator().manual_seed(step).get_state()}
    return save_checkpoint(root, step, model, opt, rank_state=rank_state, **args)


def _rewrite(path, name: str, data: bytes) -> None:
    """Replaces ``name`` and fixes the manifest's size for it (a planted file that passes the
    completeness check)."""
    (path / name).write_bytes(data)
    man = json.loads((path / "checkpoint.json").read_text())
    man["files"][name] = len(data)
    (path / "checkpoint.json").write_text(json.dumps(man))


def test_checkpoint_round_trip_and_only_complete_ones_count(tmp_path):
    root = tmp_path / "checkpoints"
    model, opt = _model_and_optimizer(0)
    _save(root, 2, model, opt)
    # what interrupted writes and hand copies leave behind
    (root / ".step_00000004.partial").mkdir()
    (root / ".step_00000004.partial" / ".metadata").write_bytes(b"")
    (root / "step_00000006").mkdir()  # no manifest
    trunc = _save(root, 8, model, opt)
    data = (trunc / "__0_0.distcp").read_bytes()
    (trunc / "__0_0.distcp").write_bytes(data[: len(data) // 2])
    man = latest_checkpoint(root)
    assert man is not None and man.step == 2 and man.loader == {"pos": 2}
    assert [m.step for m in complete_checkpoints(root)] == [2]
    with pytest.raises(CheckpointError, match="truncated"):
        read_manifest(trunc)
    with pytest.raises(CheckpointError, match=r"no checkpoint\.json"):
        read_manifest(root / "step_00000006")

    other, other_opt = _model_and_optimizer(1)
    rank_state = load_checkpoint(man, other, other_opt)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert torch.equal(rank_state["rng"], torch.Generator().manual_seed(2).get_state())

    wider = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(man, wider, None)


def test_keep_prunes_the_oldest_complete_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    model, opt = _model_and_optimizer(0)
    for step in (1, 2, 3):
        _save(root, step, model, opt, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002", "step_00000003"]


def test_planted_metadata_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    model, opt = _model_and_optimizer(0)
    path = _save(tmp_path / "checkpoints", 2, model, opt)
    _rewrite(path, ".metadata", pickle.dumps(_Planted(marker)))
    man = read_manifest(path)  # sizes agree: only the content gives it away
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load io\.open"):
        load_checkpoint(man, model, opt)
    assert not marker.exists()
    # the planted pickle does run when unpickled plainly: the test would notice a plain reader
    pickle.loads((path / ".metadata").read_bytes()).close()
    assert marker.exists()


def test_planted_values_and_rank_states_are_refused(tmp_path):
    marker = tmp_path / "code_ran"
    # a non-tensor value (DCP stores those as pickles; its default planner unpickles them fully)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"x": _Planted(marker)}, checkpoint_id=str(tmp_path / "values"), no_dist=True)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="refusing to load 'x'"):
        load_dcp({"x": 0}, tmp_path / "values")
    assert not marker.exists()
    # a per-rank state file
    model, opt = _model_and_optimizer(0)
    path = _save(tmp_path / "checkpoints", 2, model, opt)
    _rewrite(path, "rank_0.pt", pickle.dumps(_Planted(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"rank_0\.pt"):
        load_checkpoint(read_manifest(path), model, opt)
    assert not marker.exists()


def test_logging_all_reduce_runs_on_the_backends_device(monkeypatch):
    """Under NCCL the loss window is reduced on the GPU, under gloo on the CPU. No GPU is needed:
    the backend is mocked and the reduction runs on fake tensors, capturing the device that the
    all-reduce receives (the old code handed NCCL a CPU tensor)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    backend, seen = ["gloo"], []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend[0])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None, **kw: seen.append(t.device))
    window = LossWindow()
    for _ in range(3):  # three steps of two micro-batches: no reduction yet
        for _ in range(2):
            window.add({"loss": torch.tensor(1.0), "mae": torch.tensor(0.5)}, 0.5)
        window.add({"grad_norm": torch.tensor(2.0)})
        window.end_step()
    assert seen == []
    for name, want in (("gloo", torch.device("cpu")), ("nccl", torch.device("cuda", 0))):
        backend[0] = name
        assert dist_utils.collective_device() == want
        with FakeTensorMode(allow_non_fake_inputs=True):
            names, vec = window.reduced()
        assert seen[-1] == want and vec.device == want, name
        assert names == ["grad_norm", "loss", "mae"]
    assert len(seen) == 2  # one all-reduce per logged step, whatever the number of terms


def test_window_means_are_per_step():
    window = LossWindow()
    for step in range(4):
        for micro in range(2):
            window.add({"loss": torch.tensor(float(step + micro))}, 0.5)
        window.end_step()
    assert window.mean() == {"loss": pytest.approx((0.5 + 1.5 + 2.5 + 3.5) / 4)}


def test_data_smaller_than_a_batch_says_what_to_do():
    check_enough_data(18, 4, 2, "data")
    with pytest.raises(ValueError, match=r"14 samples.*pass --set batch_size=14 \(or smaller\)"):
        check_enough_data(14, 16, 1, "the train split of DIR")
    with pytest.raises(ValueError, match=r"--set batch_size=7"):
        check_enough_data(14, 16, 2, "data")
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        check_enough_data(3, 1, 4, "data")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lr=1e999", "recipe key lr: must be a finite number, got inf"),
        ("lr=0", "recipe key lr: must be > 0"),
        ("max_steps=-5", "recipe key max_steps: must be >= 1, got -5"),
        ("batch_size=0", "recipe key batch_size: must be >= 1"),
        ("log_every=0", "recipe key log_every: must be >= 1"),
        ("grad_accum=0", "recipe key grad_accum: must be >= 1"),
        ("clip_grad=nan", "recipe key clip_grad: cannot parse"),
        ("input_size=(0,64)", "recipe key input_size: must be two positive sizes"),
        ("betas=(0.9,1.5)", r"recipe key betas: must be two values in \[0, 1\)"),
        ("save_every=-1", "recipe key save_every: must be >= 0"),
        ("strategy=fsdp", "recipe key strategy: must be single, ddp or fsdp2"),
    ],
)
def test_fine_tuning_recipe_values_are_validated(item, message):
    with pytest.raises(ValueError, match=message):
        get_recipe("seg-tiny").with_overrides([item])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("optim.lr=1e999", "recipe key optim.lr: must be a finite number"),
        ("optim.clip_grad=0", "recipe key optim.clip_grad: must be > 0"),
        ("max_steps=0", "recipe key max_steps: must be >= 1"),
        ("log_every=0", "recipe key log_every: must be >= 1"),
        ("save_every=-2", "recipe key save_every: must be >= 0"),
        ("loss.koleo=1e999", "recipe key loss.koleo: must be a finite number"),
        ("device=gpu", "recipe key device: must be auto, cpu or cuda"),
    ],
)
def test_pretraining_recipe_values_are_validated(item, message):
    with pytest.raises(ValueError, match=message):
        pretrain_recipe("tiny", [item])
