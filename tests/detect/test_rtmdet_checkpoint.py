"""Loading: strict errors, weights-only refusal, safetensors round trip, hub id, exp_on_reg."""

from __future__ import annotations

import argparse
import shutil
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from sapiens2.detect import (
    HUB_FILENAME,
    HUB_REPO,
    DetectorCheckpointError,
    cached_detector_path,
    load_detector,
    save_detector,
)


@pytest.fixture(scope="module")
def checkpoint(rtmdet_files):
    return torch.load(rtmdet_files["pth"], map_location="cpu", weights_only=True)


def _save_variant(tmp_path, checkpoint, edit):
    sd = OrderedDict(checkpoint["state_dict"])
    edit(sd)
    path = tmp_path / "variant.pth"
    torch.save({"meta": checkpoint["meta"], "state_dict": sd}, path)
    return path


def test_fixture_metadata_is_read(tiny_detector):
    assert tiny_detector.classes == ("person",)
    assert tiny_detector.model.config.exp_on_reg is True
    assert next(tiny_detector.model.parameters()).dtype == torch.float32  # fp16 file, cast up


def test_missing_key_is_named(tmp_path, checkpoint):
    path = _save_variant(tmp_path, checkpoint, lambda sd: sd.pop("neck.out_convs.1.bn.running_var"))
    with pytest.raises(
        DetectorCheckpointError, match=r"missing keys: neck\.out_convs\.1\.bn\.running_var"
    ):
        load_detector(path)


def test_key_needed_for_inference_is_named(tmp_path, checkpoint):
    path = _save_variant(tmp_path, checkpoint, lambda sd: sd.pop("backbone.stage3.0.conv.weight"))
    with pytest.raises(
        DetectorCheckpointError, match=r"missing key 'backbone\.stage3\.0\.conv\.weight'"
    ):
        load_detector(path)


def test_wrong_shape_is_named(tmp_path, checkpoint):
    def edit(sd):
        sd["neck.reduce_layers.1.bn.bias"] = torch.zeros(7)

    with pytest.raises(
        DetectorCheckpointError,
        match=r"shape mismatches: neck\.reduce_layers\.1\.bn\.bias: checkpoint \(7,\) vs model \(96,\)",
    ):
        load_detector(_save_variant(tmp_path, checkpoint, edit))


def test_unexpected_key_is_named(tmp_path, checkpoint):
    def edit(sd):
        sd["bbox_head.scales.0.scale"] = torch.ones(())

    with pytest.raises(
        DetectorCheckpointError, match=r"unexpected keys: bbox_head\.scales\.0\.scale"
    ):
        load_detector(_save_variant(tmp_path, checkpoint, edit))


def test_unsupported_layout_is_named(tmp_path, checkpoint):
    def edit(sd):
        for key in [k for k in sd if k.startswith("backbone.stage2.1.blocks.")]:
            del sd[key]

    with pytest.raises(DetectorCheckpointError, match=r"variant\.pth: unsupported RTMDet layout"):
        load_detector(_save_variant(tmp_path, checkpoint, edit))


def test_differing_shared_conv_copies_are_refused(tmp_path, checkpoint):
    def edit(sd):
        key = "bbox_head.reg_convs.2.1.conv.weight"
        sd[key] = sd[key] + 1

    with pytest.raises(DetectorCheckpointError, match=r"reg_convs\.2\.1\.conv\.weight != "):
        load_detector(_save_variant(tmp_path, checkpoint, edit))


def test_non_detector_files_are_refused(tmp_path):
    other = tmp_path / "pose.safetensors"
    save_file({"backbone.patch_embed.projection.weight": torch.zeros(4, 3, 16, 16)}, str(other))
    with pytest.raises(DetectorCheckpointError, match="not an RTMDet detector checkpoint"):
        load_detector(other)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(
        DetectorCheckpointError, match=r"notes\.pth: not a readable PyTorch checkpoint"
    ):
        load_detector(text)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(DetectorCheckpointError, match="not a detector checkpoint"):
        load_detector(listing)


def test_pickled_objects_are_never_unpickled(tmp_path, checkpoint):
    path = tmp_path / "training.pth"
    torch.save({**checkpoint, "message_hub": argparse.Namespace(x=1)}, path)
    with pytest.raises(
        DetectorCheckpointError,
        match=r"weights_only=True\) refuses it: it pickles argparse\.Namespace",
    ):
        load_detector(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_detector(tmp_path / "nope.pth")


def test_safetensors_round_trip_is_identical(tmp_path, tiny_detector):
    path = tmp_path / "rtmdet_tiny.safetensors"
    save_detector(tiny_detector, path)
    again = load_detector(path)
    assert again.model.config == tiny_detector.model.config
    assert again.test_config == tiny_detector.test_config
    assert again.classes == tiny_detector.classes
    for key, value in tiny_detector.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for a, b in zip(tiny_detector.model(x), again.model(x), strict=True):
            for la, lb in zip(a, b, strict=True):
                assert torch.equal(la, lb)


def test_save_refuses_other_suffixes(tmp_path, tiny_detector):
    with pytest.raises(ValueError, match="safetensors"):
        save_detector(tiny_detector, tmp_path / "x.pth")


def test_exp_on_reg_is_saved_and_can_be_overridden(tmp_path, tiny_detector):
    flipped = load_detector(tiny_detector.model.state_dict(), exp_on_reg=False)
    assert flipped.model.config.exp_on_reg is False
    path = tmp_path / "noexp.safetensors"
    save_detector(flipped, path)
    assert load_detector(path).model.config.exp_on_reg is False
    assert load_detector(path, exp_on_reg=True).model.config.exp_on_reg is True


def test_exp_on_reg_is_read_from_the_mmdet_cfg_text(tmp_path, checkpoint):
    meta = dict(checkpoint["meta"])
    meta["cfg"] = meta["cfg"].replace("exp_on_reg=True", "exp_on_reg=False")
    path = tmp_path / "cfg_false.pth"
    torch.save({"meta": meta, "state_dict": checkpoint["state_dict"]}, path)
    assert load_detector(path).model.config.exp_on_reg is False


def test_hub_id_resolves_through_the_hf_cache(tmp_path, monkeypatch, rtmdet_files, tiny_detector):
    import huggingface_hub.constants as hf_constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / ("models--" + HUB_REPO.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    shutil.copy(rtmdet_files["pth"], snapshot / HUB_FILENAME)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert cached_detector_path() == snapshot / HUB_FILENAME
    assert cached_detector_path(filename="other.pth") is None
    det = load_detector(HUB_REPO)
    assert det.model.config == tiny_detector.model.config
    # Not cached and offline: a clear error naming the repo and file, no network.
    with pytest.raises(
        FileNotFoundError, match=r"facebook/sapiens-pose-bbox-detector/other\.pth is not in the"
    ):
        load_detector("hf://" + HUB_REPO + "/other.pth")
