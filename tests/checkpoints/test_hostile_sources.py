"""Hostile and broken model sources: missing paths never reach the hub, offline errors are one
right line, demo models by name, broken checkpoint files and NaN weights refused (issues 19, 24)."""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.conftest import OFFICIAL

import sapiens2
from sapiens2.checkpoints import CheckpointError, resolve_source
from sapiens2.cli.main import main
from sapiens2.detect import load_detector
from sapiens2.errors import ModelSourceError, Sapiens2Error

TINY_DETECTOR = OFFICIAL.parent / "rtmdet" / "rtmdet_tiny_person_random.pth"


@pytest.fixture
def fake_endpoint(monkeypatch):
    """A listening socket the hub library would connect to; ``connected()`` says whether anything
    did (a connection completes in the kernel's backlog even though nobody accepts it)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def connected() -> bool:
        try:
            srv.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    yield connected
    srv.close()


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if huggingface_hub is asked to download anything."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"hf_hub_download called with {args}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def test_missing_local_paths_never_reach_the_hub(tmp_path, monkeypatch, fake_endpoint):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()  # a local folder: "x/y" is a typo of a local path, not a repo
    for source in ("a/b/c.safetensors", "x/y", "./a/b", "a/b.pth"):
        with pytest.raises(ModelSourceError, match="not found: no file or folder") as err:
            sapiens2.load_model(source)
        assert source in str(err.value)
    with pytest.raises(ModelSourceError, match="not found"):
        sapiens2.load_model(Path("owner/sapiens2-seg-1b"))  # hub-shaped, but a Path: local
    for source in ("x/y", "x/y/z.pth", "a/b/c.safetensors"):
        with pytest.raises(ModelSourceError, match="not found") as err:
            load_detector(source)
        assert source in str(err.value)
    assert not fake_endpoint(), "a missing local path made a request to the hub endpoint"


def test_hub_forms_and_the_hf_prefix(tmp_path, monkeypatch, no_download):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the bare hub form goes to the hub (here: its cache) when nothing local has that name
    with pytest.raises(ModelSourceError, match=r"owner/sapiens2-seg-1b/sapiens2_1b_seg\.safe"):
        resolve_source("owner/sapiens2-seg-1b")
    with pytest.raises(ModelSourceError, match=r"owner/repo/model\.safetensors is not in the"):
        resolve_source("hf://owner/repo/model.safetensors")
    # an existing local file of that name wins over the hub form...
    (tmp_path / "owner").mkdir()
    shutil.copy(OFFICIAL / "tiny_seg.safetensors", tmp_path / "owner" / "sapiens2-seg-1b")
    assert (
        resolve_source("owner/sapiens2-seg-1b").resolve() == tmp_path / "owner" / "sapiens2-seg-1b"
    )
    # ...unless hf:// says the hub
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE is set"):
        resolve_source("hf://owner/sapiens2-seg-1b")
    with pytest.raises(ModelSourceError, match="is not hf://"):
        resolve_source("hf://just-a-name")


def test_offline_hub_error_is_one_right_line(tmp_path, monkeypatch, capsys, caplog, no_download):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    image = OFFICIAL.parent / "rtmdet" / "image_input_bgr.png"
    argv = ["predict", "--task", "seg", "--model", "facebook/sapiens2-seg-0.4b"]
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--out", str(tmp_path / "o"), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "HF_HUB_OFFLINE is set" in err and "sapiens2_0.4b_seg.safetensors" in err
    assert "Set HF_HUB_OFFLINE" not in err and ".." not in err
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]


def test_unreachable_hub_fails_at_once_or_uses_the_cache(
    tmp_path, monkeypatch, caplog, no_download
):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused at once
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ModelSourceError, match=r"is unreachable .* not in the Hugging Face cache"):
        resolve_source("facebook/sapiens2-seg-0.4b", cache_dir=tmp_path)
    # a cached copy is used, with one warning
    repo = tmp_path / "models--facebook--sapiens2-seg-0.4b"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    cached = repo / "snapshots" / ("a" * 40) / "sapiens2_0.4b_seg.safetensors"
    shutil.copy(OFFICIAL / "tiny_seg.safetensors", cached)
    with caplog.at_level(logging.WARNING):
        assert resolve_source("facebook/sapiens2-seg-0.4b", cache_dir=tmp_path) == cached
    assert any("using the cached" in r.getMessage() for r in caplog.records)


def test_demo_models_are_accepted_wherever_a_model_is(tmp_path):
    model = sapiens2.load_model("demo:seg")
    assert model.task == "seg"
    assert sapiens2.load_model("demo:pose").task == "pose"
    with pytest.raises(ModelSourceError, match="demo:seg, demo:pose"):
        sapiens2.load_model("demo:nope")
    rgb = torch.randint(0, 256, (40, 30, 3), dtype=torch.uint8).numpy()
    (tmp_path / "in").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "in" / "a.png"), rgb)
    argv = ["predict", "--task", "normal", "--model", "demo:normal", "--mask-model", "demo:seg"]
    argv += ["--device", "cpu", "--no-pictures", "--out", str(tmp_path / "out")]
    assert main([*argv, str(tmp_path / "in" / "a.png")]) == 0
    assert (tmp_path / "out" / "a_normal.npy").is_file()


def test_broken_checkpoint_files_are_one_checkpoint_error(tmp_path, capsys):
    sd = load_file(OFFICIAL / "tiny_backbone.safetensors")
    cases = {}
    torch.save({1: torch.zeros(3), "a": torch.zeros(1)}, tmp_path / "intkeys.pth")
    cases["intkeys.pth"] = "keys must be strings"
    (tmp_path / "passwd.pth").write_text("root:x:0:0:root:/root:/bin/bash\n" * 4)
    cases["passwd.pth"] = "not a readable PyTorch checkpoint"
    rank = dict(sd, **{"patch_embed.projection.weight": sd["patch_embed.projection.weight"][0]})
    save_file(rank, tmp_path / "rank.safetensors")
    cases["rank.safetensors"] = r"patch_embed.projection.weight has shape \(.*\); expected 4"
    save_file(
        load_file(OFFICIAL / "tiny_pointmap.safetensors"),
        tmp_path / "grid.safetensors",
        metadata={"sapiens2_token_grid": "a,b"},
    )
    cases["grid.safetensors"] = "sapiens2_token_grid 'a,b' is not two positive integers"
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            sapiens2.load_model(tmp_path / name)
        out, image = str(tmp_path / "o"), str(TINY_DETECTOR.with_name("image_input_bgr.png"))
        argv = ["predict", "--task", "seg", "--model", str(tmp_path / name), "--out", out, image]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err, err


def test_nonfinite_weights_are_refused_or_warned(tmp_path, caplog):
    sd = load_file(OFFICIAL / "tiny_seg.safetensors")
    sd["decode_head.conv_seg.weight"] = sd["decode_head.conv_seg.weight"].clone()
    sd["decode_head.conv_seg.weight"].view(-1)[3] = float("nan")
    sd["backbone.patch_embed.projection.bias"] = (
        sd["backbone.patch_embed.projection.bias"].clone().fill_(float("inf"))
    )
    save_file(sd, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in 2 tensor\(s\)") as err:
        sapiens2.load_model(tmp_path / "nan.safetensors")
    assert "backbone.patch_embed.projection.bias" in str(
        err.value
    ) and "decode_head.conv_seg.weight" in str(err.value)
    with caplog.at_level(logging.WARNING):
        model = sapiens2.load_model(tmp_path / "nan.safetensors", allow_nonfinite=True)
    assert model.task == "seg" and any("allow_nonfinite" in r.getMessage() for r in caplog.records)
    # the detector too
    det = torch.load(TINY_DETECTOR, weights_only=True)
    key = "bbox_head.rtm_cls.0.bias"
    det["state_dict"][key] = det["state_dict"][key].clone().fill_(float("nan"))
    torch.save(det, tmp_path / "det.pth")
    with pytest.raises(CheckpointError, match=f"NaN or infinite values.*{key}"):
        load_detector(tmp_path / "det.pth")
    assert load_detector(tmp_path / "det.pth", allow_nonfinite=True) is not None


def test_errors_are_sapiens2_errors_and_keep_their_builtin_types():
    assert issubclass(CheckpointError, Sapiens2Error) and issubclass(CheckpointError, ValueError)
    assert issubclass(ModelSourceError, FileNotFoundError)


def test_hub_warnings_print_once(tmp_path, monkeypatch, no_download):
    """huggingface_hub prints with a handler of its own and also passes records on to the root
    logger: with the root logger configured (as the CLI does), each retry warning showed twice."""
    printed = []

    class Counting(logging.Handler):
        def emit(self, record):
            printed.append(record.getMessage())

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = logging.getLogger("huggingface_hub")
    monkeypatch.setattr(hub, "handlers", [Counting()])  # the library's own handler
    monkeypatch.setattr(hub, "propagate", True)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [Counting()])  # the application's (basicConfig)
    with pytest.raises(ModelSourceError):
        resolve_source("facebook/sapiens2-seg-0.4b", cache_dir=tmp_path)
    logging.getLogger("huggingface_hub.utils._http").warning("retrying, says the hub")
    assert printed == ["retrying, says the hub"]
