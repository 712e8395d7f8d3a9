"""The offline demo and the eval command, end to end."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

import sapiens2
from sapiens2.cli.main import main
from sapiens2.demo import DEMO_TASKS, demo_model_path, find_people, visible_people


def test_demo_models_are_bundled_in_the_official_layout():
    for task in DEMO_TASKS:
        model = sapiens2.load_model(demo_model_path(task))
        assert model.task == task and model.arch.name == "sapiens2_demo"


def test_demo_writes_the_contact_sheet_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "1"]) == 0
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    # two rows of six full-size panels (576x432 scenes) and the legend row
    assert sheet is not None and sheet.shape[0] > 2 * 576 + 150 and sheet.shape[1] > 6 * 432
    page = (out / "index.html").read_text()
    for link in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert link.startswith("https://") or (out / link).is_file(), link
    assert "pixelated" not in page and "max-width:none" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["person_pixels"] > 0 and summary["people_in_scene"] >= 1
    assert summary["median_depth_m"] == round(summary["median_depth_m"], 2)
    assert "people found:" in capsys.readouterr().out


def test_demo_on_a_photo_says_the_models_know_only_synthetic_figures(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((192, 144, 3), 128, np.uint8))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--image", str(photo)]) == 0
    said = capsys.readouterr().out
    assert "synthetic figures only" in said and "facebook/sapiens2-seg-1b" in said
    page = (tmp_path / "demo" / "index.html").read_text()
    assert "do not work on photos" in page
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["people_in_scene"] is None


@pytest.mark.parametrize("seed", range(10_000, 10_004))
def test_people_are_found_from_segmentation_and_depth(seed):
    """On exact labels the demo's person finder counts the visible people of a scene."""
    from sapiens2.data.synth.render import SynthConfig, render_sample

    scene = render_sample(np.random.default_rng(seed), SynthConfig(288, 216))
    instances, boxes = find_people(scene.seg, scene.pointmap[..., 2])
    assert len(boxes) == visible_people(scene.instance) == instances.max()


def test_eval_command_writes_reports(synth_data, tmp_path, capsys):
    model = sapiens2.create_model("sapiens2_tiny", task="seg")
    sapiens2.save_model(model, tmp_path / "seg.safetensors")
    out = tmp_path / "report.json"
    args = ["eval", "--task", "seg", "--model", str(tmp_path / "seg.safetensors"), "--data",
            str(synth_data), "--out", str(out), "--input-size", "96", "64", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert 0 <= report["metrics"]["mIoU"] <= 100 and report["split"] == "val"
    assert "| mIoU |" in out.with_suffix(".md").read_text()
    args[2] = "normal"
    assert main(args) == 2
    assert "is a seg model, not a normal model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def held_out_scenes(tmp_path_factory):
    """16 full-distribution synthetic scenes at the demo models' 256x192, a seed unseen in training
    (the demo models were trained on seed 2026)."""
    from sapiens2.data.synth.render import SynthConfig
    from sapiens2.data.synth.writer import WriteConfig, write_dataset

    root = tmp_path_factory.mktemp("demo_held_out") / "data"
    write_dataset(WriteConfig(root, num=16, seed=77, val_fraction=0.0, render=SynthConfig()))
    return root


# Floors a little under what the bundled models measure on these 16 scenes (seg mIoU 13.8, normal
# 28.9 deg, depth AbsRel 0.201, albedo MAE 0.140, matting SAD 13.4; docs/demo.md has the 501-scene
# held-out numbers): a regression of the demo models or of their pipeline fails here. The pose model
# has no floor: its body AP is 0.001 (docs/demo.md says why), and a floor of 0 could not fail.
DEMO_FLOORS = {
    "seg": ("mIoU", ">=", 12.0),
    "normal": ("mean", "<=", 31.0),
    "pointmap": ("depth_abs_rel", "<=", 0.23),
    "albedo": ("mae", "<=", 0.152),
    "matting": ("sad", "<=", 15.0),
}


@pytest.mark.parametrize("task", sorted(DEMO_FLOORS))
def test_bundled_demo_models_meet_their_floor(held_out_scenes, task):
    from sapiens2.evaluation import evaluate

    model = sapiens2.load_model(demo_model_path(task), dtype="fp32")
    m = evaluate(model, task, held_out_scenes, split="train", input_size=(256, 192), batch_size=16)
    key, op, floor = DEMO_FLOORS[task]
    value = m[key]
    assert (value >= floor) if op == ">=" else (value <= floor), (task, key, value)
