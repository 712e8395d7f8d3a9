"""The official <-> transformers key map, transformers-format folders, ``sapiens2 convert``,
``create_model(pretrained=True)`` and ``push_to_hub`` (all offline; transformers itself is only
needed by the tests that load our folders with it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.conftest import official

import sapiens2
from sapiens2.checkpoints import CheckpointError, read_state_dict, state_dict_for_saving
from sapiens2.checkpoints.transformers import (
    official_to_transformers,
    save_pretrained,
    transformers_to_official,
)
from sapiens2.cli.main import main

TASKS = ("pose", "seg", "normal", "pointmap")  # the tasks transformers has classes for


def _fixture(task: str | None) -> Path:
    return official(f"tiny_{task}" if task else "tiny_backbone")[0]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("task", [None, *TASKS])
def test_key_map_round_trip_is_exact(task):
    sd = read_state_dict(_fixture(task))  # the official file's keys and dtypes
    theirs = official_to_transformers(sd, task)
    depth = 18
    pre = "model." if task else ""
    if task is None:  # counts from the key map: official 6 + 17 L, transformers 5 + 19 L
        assert (len(sd), len(theirs)) == (6 + 17 * depth, 5 + 19 * depth)
    d, f = 64, 256
    assert theirs[f"{pre}model.layer.0.mlp.gate_proj.weight"].shape == (f, d)
    torch.testing.assert_close(
        theirs[f"{pre}model.layer.3.mlp.up_proj.bias"],
        sd[f"{'backbone.' if task else ''}blocks.3.ffn.w12.bias"][f:],
        rtol=0,
        atol=0,
    )
    assert f"{pre}embeddings.register_tokens" in theirs and f"{pre}norm.weight" in theirs
    if task:
        assert "decode_head.predictor.weight" in theirs
    if task == "pointmap":
        assert "scale_head.predictor.proj.weight" in theirs
    _same(transformers_to_official(theirs, task, head_dim=16), sd)


def test_keys_without_a_transformers_name_are_named():
    sd = read_state_dict(official("tiny_albedo")[0])
    with pytest.raises(CheckpointError, match="no Sapiens2 class for albedo"):
        official_to_transformers(sd, "albedo")
    sd = read_state_dict(_fixture("seg"))
    sd["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"decode_head\.extra\.weight"):
        official_to_transformers(sd, "seg")


@pytest.mark.parametrize("layout", ["official", "transformers"])
def test_load_model_reads_our_transformers_folders(layout, tmp_path):
    model = sapiens2.load_model(_fixture("pointmap"))
    folder = save_pretrained(model, tmp_path / "hf", key_layout=layout)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "sapiens2"
    assert config["architectures"] == ["Sapiens2ForPointmapEstimation"]
    assert config["image_size"] == [512, 384]  # the scale MLP's input size
    again = sapiens2.load_model(folder)
    _same(state_dict_for_saving(again), state_dict_for_saving(model))
    assert again.input_size == model.input_size


def test_folders_as_transformers_writes_them(tmp_path):
    """transformers' save_pretrained writes the official names without the RoPE periods and
    without our metadata: the periods are recomputed in bfloat16, the token grid comes from the
    config's image_size."""
    model = sapiens2.load_model(_fixture("pointmap"))
    folder = save_pretrained(model, tmp_path / "hf", key_layout="official")
    sd = load_file(folder / "model.safetensors")
    del sd["backbone.rope_embed.periods"]
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    again = sapiens2.load_model(folder)
    _same(state_dict_for_saving(again), state_dict_for_saving(model))
    assert again.input_size == (512, 384)


def test_a_float32_rope_model_keeps_its_rope_dtype(tmp_path):
    model = sapiens2.create_model("sapiens2_tiny", task="seg", depth=2, rope_dtype="fp32")
    again = sapiens2.load_model(save_pretrained(model, tmp_path / "hf"))
    assert again.arch.rope_dtype == "fp32"
    _same(state_dict_for_saving(again), state_dict_for_saving(model))


def test_transformers_names_need_the_config(tmp_path):
    model = sapiens2.load_model(_fixture("seg"))
    folder = save_pretrained(model, tmp_path / "hf", key_layout="transformers")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no Sapiens2 config\.json"):
        sapiens2.load_model(folder)


def test_convert_cli_official_to_transformers_and_back(tmp_path, capsys):
    src = _fixture("seg")
    assert main(["convert", "--to", "transformers", str(src), str(tmp_path / "hf")]) == 0
    back = tmp_path / "seg.safetensors"
    assert main(["convert", "--to", "official", str(tmp_path / "hf"), str(back)]) == 0
    _same(read_state_dict(back), read_state_dict(src))
    assert "official layout" in capsys.readouterr().out


# ---------------------------------------------------------------------------- transformers
def _fp32_rope_twin(model):
    """Our model with the RoPE in float32, which is what transformers computes."""
    from dataclasses import replace

    from sapiens2.models import build_model

    task = getattr(model, "task", None)
    arch = model.arch if task else model.cfg
    head = model.head_config if task else None
    twin = build_model(replace(arch, rope_dtype="fp32"), task, head)
    twin.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    (twin.backbone if task else twin).rope_embed.reset_parameters()  # float32 periods
    return twin.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("task", ["pose", "normal", "pointmap"])  # seg: the test below
def test_transformers_loads_our_folder(task, tmp_path):
    """The task class computes our model with float32 RoPE (what transformers implements): the
    same up to float32 arithmetic (measured ~2e-6 of the output range)."""
    transformers = pytest.importorskip("transformers", minversion="5.25")
    from sapiens2.checkpoints.transformers import TRANSFORMERS_CLASSES

    path, io, _ = official(f"tiny_{task}")
    ours = sapiens2.load_model(path)
    folder = save_pretrained(ours, tmp_path / "hf")
    theirs = getattr(transformers, TRANSFORMERS_CLASSES[task]).from_pretrained(folder).eval()
    with torch.no_grad():
        got = [v for v in theirs(pixel_values=io["input"]).values() if torch.is_tensor(v)]
        ref = _fp32_rope_twin(ours)(io["input"])
    ref = ref if isinstance(ref, tuple) else (ref,)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert _rel(g, r) < 1e-4


@pytest.mark.parametrize("layout", ["transformers", "official"])
def test_automodel_and_task_class_load_both_layouts(layout, tmp_path):
    transformers = pytest.importorskip("transformers", minversion="5.25")
    path, io, _ = official("tiny_seg")
    ours = sapiens2.load_model(path)
    folder = save_pretrained(ours, tmp_path / "hf", key_layout=layout)
    twin = _fp32_rope_twin(ours)
    x = io["input"]
    theirs = transformers.Sapiens2ForSemanticSegmentation.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = theirs(pixel_values=x).logits
    assert _rel(logits, twin(x)) < 1e-4
    if layout == "official":
        # against the released bfloat16 RoPE: the documented difference (5.1e-3 measured here)
        with torch.no_grad():
            assert 1e-4 < _rel(logits, ours(x)) < 2e-2
        return  # AutoModel finds no backbone weights under backbone. (transformers' mapping)
    backbone = transformers.AutoModel.from_pretrained(folder).eval()
    assert type(backbone).__name__ == "Sapiens2Model"
    with torch.no_grad():
        features = backbone(pixel_values=x).last_hidden_state
        assert _rel(features, twin.backbone.forward_features(x)) < 1e-4


# ---------------------------------------------------------------------------- hub
def test_pretrained_ids():
    from sapiens2.checkpoints import pretrained_id

    assert pretrained_id("sapiens2_0.4b", "pose") == "facebook/sapiens2-pose-0.4b"
    assert pretrained_id("sapiens2_5b", "seg") == "facebook/sapiens2-seg-5b"
    assert pretrained_id("sapiens2_1b_4k") == "facebook/sapiens2-pretrain-1b-4k"
    with pytest.raises(ValueError, match="no released weights"):
        pretrained_id("sapiens2_tiny", "pose")
    with pytest.raises(ValueError, match="unknown task"):
        pretrained_id("sapiens2_0.4b", "depth")


def _fake_hub_cache(root: Path, repo_id: str, filename: str, source: Path) -> Path:
    """huggingface_hub's cache layout: refs/main names a snapshot that holds the file."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(source, repo / "snapshots" / commit / filename)
    return root


def test_create_model_pretrained_reads_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = _fixture("pose")
    cache = _fake_hub_cache(
        tmp_path, "facebook/sapiens2-pose-0.1b", "sapiens2_0.1b_pose.safetensors", src
    )
    # The cached file is found and read; it holds the tiny arch, which is not what was asked for.
    with pytest.raises(
        CheckpointError, match=r"sapiens2_tiny pose model, not the sapiens2_0\.1b pose"
    ):
        sapiens2.create_model(
            "sapiens2_0.1b", pretrained=True, task="pose", cache_dir=cache, local_files_only=True
        )
    model = sapiens2.create_model("sapiens2_tiny", pretrained=True, task="pose", weights=src)
    _same(state_dict_for_saving(model), read_state_dict(src))
    with pytest.raises(ValueError, match="cannot also set depth"):
        sapiens2.create_model("sapiens2_tiny", pretrained=True, task="pose", depth=2)
    assert sapiens2.create_model("sapiens2_tiny", task="pose").task == "pose"  # random


def test_push_to_hub_uploads_a_folder_with_a_licensed_card(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload"] = (repo_id, kwargs)
        shutil.copytree(folder_path, tmp_path / "uploaded")

        class Info:
            commit_url = f"https://huggingface.co/{repo_id}/commit/1"
            pr_url = None

        return Info()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model = sapiens2.load_model(_fixture("pose"))
    url = sapiens2.push_to_hub(
        model, "me/sapiens2-pose-ft", private=True, base_model="facebook/sapiens2-pose-0.4b"
    )
    assert url == "https://huggingface.co/me/sapiens2-pose-ft/commit/1"
    assert calls["create"] == (
        "me/sapiens2-pose-ft",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    up = tmp_path / "uploaded"
    assert sorted(p.name for p in up.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (up / "README.md").read_text()
    head = card.split("---")[1]
    assert "license: other" in head and "license_name: sapiens2-license" in head
    assert "license_link: https://github.com/facebookresearch/sapiens2/blob/main/LICENSE.md" in head
    assert "base_model: facebook/sapiens2-pose-0.4b" in head
    assert "Sapiens2 License" in card and "Sapiens2ForPoseEstimation" in card
    _same(state_dict_for_saving(sapiens2.load_model(up)), state_dict_for_saving(model))
