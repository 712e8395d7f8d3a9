"""The offline demo and the eval command, end to end."""

from __future__ import annotations

import json

import cv2
import pytest

import sapiens2
from sapiens2.cli.main import main
from sapiens2.demo import DEMO_TASKS, demo_model_path


def test_demo_models_are_bundled_in_the_official_layout():
    for task in DEMO_TASKS:
        model = sapiens2.load_model(demo_model_path(task))
        assert model.task == task and model.arch.name == "sapiens2_tiny"


def test_demo_writes_the_contact_sheet_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seed", "1"]) == 0
    sheet = cv2.imread(str(tmp_path / "demo" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 300 and sheet.shape[1] > 1000
    assert "contact_sheet.png" in (tmp_path / "demo" / "index.html").read_text()
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["person_pixels"] > 0


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


def test_trained_demo_models_beat_their_random_start(synth_data):
    """The bundled seg and normal models know synthetic humans better than a random model."""
    from sapiens2.evaluation import evaluate

    for task, key, better in (("seg", "aAcc", max), ("normal", "mean", min)):
        trained = sapiens2.load_model(demo_model_path(task))
        rand = sapiens2.create_model("sapiens2_tiny", task=task)
        a = evaluate(trained, task, synth_data, input_size=(256, 192))[key]
        b = evaluate(rand, task, synth_data, input_size=(256, 192))[key]
        assert better(a, b) == a and a != pytest.approx(b, rel=0.1), (task, a, b)
