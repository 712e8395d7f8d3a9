"""Loading official-layout checkpoints: inference of arch and task, strictness, errors, hub ids."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.conftest import OFFICIAL

import sapiens2
from sapiens2.checkpoints import CheckpointError, hub_filename, read_state_dict


def test_save_load_round_trip_is_exact(tmp_path):
    for task in (None, "pose", "seg", "normal", "pointmap", "albedo"):
        model = sapiens2.create_model("sapiens2_tiny", task=task)
        path = sapiens2.save_model(model, tmp_path / f"{task}.safetensors")
        sd = load_file(path)
        prefix = "backbone." if task else ""
        assert sd[f"{prefix}rope_embed.periods"].dtype == torch.bfloat16
        again = sapiens2.load_model(path)
        assert type(again) is type(model) and getattr(again, "task", None) == task
        for k, v in model.state_dict().items():
            assert torch.equal(v.float(), again.state_dict()[k].float()), k


def test_saved_fixture_round_trips_byte_for_byte(tmp_path):
    src = OFFICIAL / "tiny_seg.safetensors"
    model = sapiens2.load_model(src)
    out = sapiens2.save_model(model, tmp_path / "seg.safetensors")
    a, b = load_file(src), load_file(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_arch_inferred_for_every_official_size(tmp_path):
    for name in ("sapiens2_0.1b", "sapiens2_0.4b", "sapiens2_1b_4k", "sapiens2_5b"):
        meta = sapiens2.create_model(name, device="meta").state_dict()
        model = sapiens2.load_model(meta, device="meta")
        assert model.cfg.name == name
    for task in ("pose", "pointmap"):
        meta = sapiens2.create_model("sapiens2_1b", task=task, device="meta").state_dict()
        model = sapiens2.load_model(meta, device="meta")
        assert model.arch.name == "sapiens2_1b" and model.task == task
        assert (
            model.head_config
            == sapiens2.create_model("sapiens2_1b", task=task, device="meta").head_config
        )


def test_unknown_shapes_still_load():
    model = sapiens2.create_model(
        "sapiens2_tiny", embed_dim=96, depth=3, num_heads=6, num_kv_heads=None
    )
    loaded = sapiens2.load_model(model.state_dict())
    assert (
        loaded.cfg.name.startswith("custom") and loaded.cfg.depth == 3 and loaded.cfg.num_heads == 6
    )


def test_missing_unexpected_and_misshaped_keys_are_named():
    sd = sapiens2.create_model("sapiens2_tiny", task="seg").state_dict()
    broken = dict(sd)
    del broken["decode_head.conv_layers.3.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: decode_head\.conv_layers\.3\.bias"):
        sapiens2.load_model(broken)
    broken = dict(sd, **{"decode_head.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: decode_head\.extra\.weight"):
        sapiens2.load_model(broken)
    broken = dict(sd)
    broken["backbone.blocks.3.attn.proj.bias"] = torch.zeros(65)
    with pytest.raises(
        CheckpointError, match=r"blocks\.3\.attn\.proj\.bias: checkpoint \(65,\) vs model \(64,\)"
    ):
        sapiens2.load_model(broken)


def test_not_sapiens2_files_get_clear_errors(tmp_path):
    v1 = {"pos_embed": torch.zeros(1, 5, 8), "layers.0.attn.qkv.weight": torch.zeros(24, 8)}
    with pytest.raises(CheckpointError, match="Sapiens \\(v1\\)"):
        sapiens2.load_model(v1)
    save_file({"foo.weight": torch.zeros(3)}, tmp_path / "random.safetensors")
    with pytest.raises(CheckpointError, match="not a Sapiens2 checkpoint"):
        sapiens2.load_model(tmp_path / "random.safetensors")
    data = (OFFICIAL / "tiny_backbone.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors"):
        sapiens2.load_model(tmp_path / "cut.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        sapiens2.load_model(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError):
        sapiens2.load_model(tmp_path / "nope.safetensors")


def test_pth_checkpoints_load_safely(tmp_path):
    sd = sapiens2.create_model("sapiens2_tiny").state_dict()
    torch.save({"state_dict": sd, "meta": {"epoch": 3}}, tmp_path / "ckpt.pth")
    model = sapiens2.load_model(tmp_path / "ckpt.pth")
    assert torch.equal(model.ln1.weight, sd["ln1.weight"])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": sd, "obj": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        sapiens2.load_model(tmp_path / "evil.pth")


def test_meta_loading_reads_no_data(tmp_path):
    sd = read_state_dict(OFFICIAL / "tiny_pose.safetensors", device="meta")
    assert all(v.is_meta for v in sd.values())
    model = sapiens2.load_model(OFFICIAL / "tiny_pose.safetensors", device="meta")
    assert next(model.parameters()).is_meta


def test_dtype_and_device_options():
    model = sapiens2.load_model(OFFICIAL / "tiny_backbone.safetensors", dtype="fp16")
    assert model.ln1.weight.dtype == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        sapiens2.load_model(OFFICIAL / "tiny_backbone.safetensors", dtype="fp8")


def test_hub_filenames():
    assert hub_filename("facebook/sapiens2-pose-0.4b") == "sapiens2_0.4b_pose.safetensors"
    assert hub_filename("facebook/sapiens2-pretrain-1b-4k") == "sapiens2_1b_4k_pretrain.safetensors"
    with pytest.raises(ValueError):
        hub_filename("someone/other-model")


def _fake_hub_cache(root, repo_id, filename, src):
    """Lays out ``src`` the way huggingface_hub caches a downloaded file."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    shutil.copy(src, snap / filename)


def test_hub_id_resolves_from_local_cache_offline(tmp_path):
    """A hub id goes through huggingface_hub and its cache (no network: local_files_only)."""
    _fake_hub_cache(
        tmp_path, "facebook/sapiens2-seg-0.4b", "sapiens2_0.4b_seg.safetensors",
        OFFICIAL / "tiny_seg.safetensors",
    )  # fmt: skip
    model = sapiens2.load_model(
        "facebook/sapiens2-seg-0.4b", cache_dir=tmp_path, local_files_only=True
    )
    assert model.task == "seg"
    model = sapiens2.load_model(
        "hf://facebook/sapiens2-seg-0.4b/sapiens2_0.4b_seg.safetensors",
        cache_dir=tmp_path,
        local_files_only=True,
    )
    assert model.task == "seg"
    # a name ending in a file extension is a local path unless hf:// says otherwise
    with pytest.raises(FileNotFoundError, match=r"no file or folder.*write hf://facebook/"):
        sapiens2.load_model(
            "facebook/sapiens2-seg-0.4b/sapiens2_0.4b_seg.safetensors", cache_dir=tmp_path
        )
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        sapiens2.load_model("facebook/sapiens2-seg-1b", cache_dir=tmp_path, local_files_only=True)
