"""Matting as a task end to end: the model and its checkpoint detection, the predictor, the
``predict`` files (alpha, RGBA cut-out, composite; images and video), ``eval``, ``check-data``, the
recipes and a short training run whose loss goes down."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import sapiens2
from sapiens2.cli.main import main
from sapiens2.models import default_head_config, get_arch
from sapiens2.models.heads import DenseHeadConfig, MattingHead
from sapiens2.tasks import get_task
from sapiens2.viz.matting import composite, cutout_rgba, parse_colour

H, W = 64, 48


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("matting") / "tiny_matting.safetensors"
    sapiens2.save_model(sapiens2.create_model("sapiens2_tiny", task="matting"), path)
    return path


def test_create_model_gives_the_official_head_and_4_channels_in_0_1():
    model = sapiens2.create_model("sapiens2_tiny", task="matting")
    assert isinstance(model.decode_head, MattingHead) and model.task == "matting"
    assert "decode_head.conv_matting.weight" in model.state_dict()
    with torch.no_grad():
        out = model(torch.randn(2, 3, H, W))
    assert out.shape == (2, 4, H, W)  # foreground RGB then alpha, at the input resolution
    assert out.min() >= 0 and out.max() <= 1
    # the released sizes: the normal head's widths with 4 outputs; the 4K backbone adds a stage
    for arch in ("sapiens2_0.4b", "sapiens2_1b", "sapiens2_5b", "sapiens2_1b_4k"):
        normal = default_head_config("normal", get_arch(arch))
        matting = default_head_config("matting", get_arch(arch))
        assert matting == DenseHeadConfig(**{**vars(normal), "out_channels": 4}), arch


def test_load_model_detects_matting_in_both_layouts(model_path, tmp_path):
    from sapiens2.checkpoints import save_pretrained

    model = sapiens2.load_model(model_path)
    assert model.task == "matting" and model.arch.name == "sapiens2_tiny"
    folder = save_pretrained(model, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Sapiens2ForImageMatting"] and config["num_labels"] == 4
    again = sapiens2.load_model(folder)
    assert again.task == "matting"
    from sapiens2.checkpoints.publish import model_card

    assert "A Sapiens2 human matting" in model_card(model, "me/matting-tiny")
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_composite_and_cutout_formulas():
    rng = np.random.default_rng(0)
    alpha = rng.random((5, 4)).astype(np.float32)
    alpha[0, 0], alpha[0, 1] = 0.0, 1.0
    colour = rng.random((5, 4, 3)).astype(np.float32)
    fg = colour * alpha[..., None]  # pre-multiplied
    bg = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    comp = composite(fg, alpha, bg)
    want = np.round((fg + bg / 255.0 * (1 - alpha[..., None])) * 255)
    assert np.abs(comp.astype(np.float64) - want).max() <= 1
    assert np.array_equal(comp[0, 0], bg[0, 0])  # alpha 0: the background
    plain = composite(fg, alpha, (0, 177, 64))
    assert np.array_equal(plain[0, 0], [0, 177, 64])
    rgba = cutout_rgba(fg, alpha)
    assert rgba.shape == (5, 4, 4)
    assert np.array_equal(rgba[..., 3], np.round(alpha * 255).astype(np.uint8))
    keep = alpha > 0.05  # straight colour where there is coverage
    assert np.abs(rgba[..., :3][keep] / 255.0 - colour[keep]).max() < 0.02
    assert np.array_equal(rgba[0, 0], [0, 0, 0, 0])
    assert parse_colour("#ff0010") == (255, 0, 16) and parse_colour("1,2,3") == (1, 2, 3)
    assert parse_colour("beach.jpg") is None
    with pytest.raises(ValueError, match=r"0\.\.255"):
        parse_colour("300,0,0")


def test_predictor_returns_mattes_at_the_image_size(model_path):
    from sapiens2.inference import Predictor

    predictor = Predictor("matting", model_path, input_size=(H, W))
    rgb = np.random.default_rng(1).integers(0, 255, (50, 37, 3), dtype=np.uint8)
    res = predictor.predict(rgb)
    assert type(res) is get_task("matting").result
    assert res.alpha.shape == (50, 37) and res.foreground.shape == (50, 37, 3)
    assert res.alpha.min() >= 0 and res.alpha.max() <= 1 and res.mask is None
    with pytest.raises(ValueError, match="masks are only used by the normal, pointmap and albedo"):
        predictor.predict(rgb, masks=np.ones((50, 37), bool))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "a.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (W, H))
    for _ in range(2):
        writer.write(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    writer.release()
    bg = root / "bg.png"
    cv2.imwrite(str(bg), np.full((20, 30, 3), (10, 200, 30), np.uint8))  # BGR on disk
    return root


def _predict(model_path, out, *extra):
    argv = ["predict", "--task", "matting", "--model", str(model_path), "--out", str(out),
            "--device", "cpu", "--input-size", str(H), str(W), *extra]  # fmt: skip
    return main(argv)


def test_predict_writes_alpha_cutout_and_composite(model_path, media, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(model_path, out, str(media / "a.png"), str(media / "clip.mp4")) == 0
    assert "3 frame(s) (1 image(s), 2 video frame(s) from 1 video(s))" in capsys.readouterr().out
    alpha = cv2.imread(str(out / "a_alpha.png"), cv2.IMREAD_UNCHANGED)
    cutout = cv2.imread(str(out / "a_cutout.png"), cv2.IMREAD_UNCHANGED)
    comp = cv2.imread(str(out / "a_composite.png"))
    assert alpha.shape == (H, W) and alpha.dtype == np.uint8
    assert cutout.shape == (H, W, 4) and np.array_equal(cutout[..., 3], alpha)
    assert comp.shape == (H, W, 3) and cv2.imread(str(out / "a.jpg")).shape == (H, 2 * W, 3)
    # the files are the predictor's matte: alpha, and F·α + green·(1 − α)
    from sapiens2.inference import Predictor

    rgb = cv2.imread(str(media / "a.png"))[..., ::-1]
    res = Predictor("matting", model_path, input_size=(H, W)).predict(np.ascontiguousarray(rgb))
    assert np.abs(alpha - res.alpha * 255).max() <= 1
    want = (res.foreground + np.array([0, 177, 64]) / 255.0 * (1 - res.alpha[..., None])) * 255
    assert np.abs(comp[..., ::-1] - np.clip(want, 0, 255)).max() <= 1
    for i in range(2):  # video frames in <out>/<video>/, and the video of pictures
        assert (out / "clip" / f"clip_{i:06d}_alpha.png").is_file()
    assert (out / "clip.mp4").is_file()


def test_predict_composites_over_a_background_image(model_path, media, tmp_path, capsys):
    out = tmp_path / "out"
    bg = str(media / "bg.png")
    assert _predict(model_path, out, "--background", bg, "--no-pictures", str(media / "a.png")) == 0
    comp = cv2.imread(str(out / "a_composite.png"))[..., ::-1].astype(np.float64)
    a = cv2.imread(str(out / "a_alpha.png"), cv2.IMREAD_UNCHANGED) / 255.0
    low = a < 0.02  # where the matte is empty the background image shows (resized, one colour)
    if low.any():
        assert np.abs(comp[low] - [30, 200, 10]).max() <= 6
    assert not (out / "a.jpg").exists()
    capsys.readouterr()
    code = _predict(model_path, tmp_path / "o2", "--background", "nope.png", str(media / "a.png"))
    assert code != 0
    assert "neither a colour" in capsys.readouterr().err
    code = _predict(model_path, tmp_path / "o3", "--mask-dir", str(media), str(media / "a.png"))
    assert code != 0
    assert "--mask-dir is only used with --task normal, pointmap or albedo" in (
        capsys.readouterr().err
    )


def test_eval_and_check_data(model_path, synth_data, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["eval", "--task", "matting", "--model", str(model_path), "--data", str(synth_data),
            "--out", str(out), "--input-size", "96", "64", "--device", "cpu",
            "--max-samples", "3"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert {"sad", "mse", "grad", "conn"} <= set(metrics) and metrics["num_samples"] == 3
    assert metrics["sad"] > 0 and 0 < metrics["mse"] < 1
    capsys.readouterr()
    assert main(["check-data", "--data", str(synth_data), "--task", "matting"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == {"task": "matting", "split": "train", "checked": 18, "errors": 0}


def test_recipes_exist_for_every_size():
    from sapiens2.train.recipes import RECIPES, SIZES

    for size in SIZES:
        r = RECIPES[f"matting-{size}"]
        assert r.task == "matting" and not r.official
    tiny = RECIPES["matting-tiny"]
    assert (tiny.arch, tiny.input_size, tiny.precision) == ("sapiens2_tiny", (256, 192), "fp32")
    assert RECIPES["matting-1b"].max_steps == RECIPES["normal-1b"].max_steps


def test_training_loss_goes_down(synth_data, tmp_path):
    from sapiens2.train.recipes import get_recipe
    from sapiens2.train.trainer import train

    recipe = get_recipe("matting-tiny").with_overrides(
        {"input_size": (96, 64), "batch_size": 4, "log_every": 1, "vis_every": 24,
         "val_every": 24, "val_max_batches": 1, "max_steps": 24, "warmup_steps": 2,
         "lr": 5e-3}
    )  # fmt: skip
    res = train(recipe, synth_data, tmp_path / "run")
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 24 and all(np.isfinite(losses))
    # noisy per batch (4 of 18 images), but clearly down: 3.6 -> 2.8 on average over 6 steps
    assert sum(losses[-6:]) / 6 < 0.85 * sum(losses[:6]) / 6, losses
    assert {"sad", "mse", "grad", "conn"} <= set(res.val)
    model = sapiens2.load_model(tmp_path / "run" / "model.safetensors")
    assert model.task == "matting"
