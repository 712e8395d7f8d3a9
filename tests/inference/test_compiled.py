"""``torch.compile`` in prediction: same results as eager, one compilation per shape, thread-safe."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import sapiens2
from sapiens2.inference import Predictor, compiled
from sapiens2.inference.compiled import CompiledForward

pytestmark = pytest.mark.slow  # dynamo's first trace costs seconds

# Two blocks instead of 18: dynamo traces every block, and what is tested does not depend on depth.
DEPTH = 2


@pytest.fixture(scope="module")
def seg_model():
    torch.manual_seed(0)
    return sapiens2.create_model("sapiens2_tiny", task="seg", depth=DEPTH).eval()


def test_compiled_forward_traces_the_model_once_per_shape(seg_model):
    run = CompiledForward(seg_model, backend="eager")  # dynamo tracing without code generation
    x = torch.randn(4, 3, 64, 48)
    with torch.inference_mode():
        assert torch.equal(run(x), seg_model(x))
        assert torch.equal(run(x[:2]), seg_model(x[:2]))  # a short last batch
        run(x)
    assert set(run.compile_seconds) == {(4, 3, 64, 48), (2, 3, 64, 48)}


def test_first_calls_of_a_shape_from_two_threads_compile_once(seg_model, monkeypatch):
    calls = []
    run = CompiledForward(seg_model, backend="eager")
    real = run._compiled

    def counting(x):
        calls.append(threading.get_ident())
        return real(x)

    monkeypatch.setattr(run, "_compiled", counting)
    x = torch.randn(3, 3, 64, 48)
    outs = [None, None]

    def work(i):
        with torch.inference_mode():
            outs[i] = run(x)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(run.compile_seconds) == 1 and len(calls) == 2
    assert torch.equal(outs[0], outs[1])


def test_predictor_with_compile_predicts_what_eager_predicts(seg_model, monkeypatch):
    made = []

    def eager_backend(module):
        made.append(CompiledForward(module, backend="eager"))
        return made[-1]

    monkeypatch.setattr(compiled, "CompiledForward", eager_backend)
    monkeypatch.setattr("sapiens2.inference.predictor.CompiledForward", eager_backend)
    rgb = np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    for task in ("seg", "pose"):
        torch.manual_seed(1)
        model = sapiens2.create_model("sapiens2_tiny", task=task, depth=DEPTH).eval()
        plain = Predictor(task, model, input_size=(64, 48)).predict([rgb, rgb])
        fast = Predictor(task, model, input_size=(64, 48), compile=True).predict([rgb, rgb])
        for a, b in zip(plain, fast, strict=True):
            for field in ("labels", "keypoints", "scores"):
                if hasattr(a, field):
                    assert np.array_equal(getattr(a, field), getattr(b, field))
        assert made[-1].compile_seconds  # the predictor's forwards went through it


def test_predict_cli_compile_flag(seg_model, monkeypatch, tmp_path):
    import cv2

    from sapiens2.cli.main import main

    made = []

    def eager_backend(module):
        made.append(CompiledForward(module, backend="eager"))
        return made[-1]

    monkeypatch.setattr("sapiens2.inference.predictor.CompiledForward", eager_backend)
    sapiens2.save_model(seg_model, tmp_path / "seg.safetensors")
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 30, 3), 128, np.uint8))
    argv = ["predict", "--task", "seg", "--model", str(tmp_path / "seg.safetensors"), "--device",
            "cpu", "--input-size", "64", "48", "--no-pictures", str(tmp_path / "a.png")]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "eager")]) == 0
    assert not made
    assert main([*argv, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    assert len(made) == 1 and made[0].compile_seconds
    same = cv2.imread(str(tmp_path / "eager" / "a_seg.png")) == cv2.imread(
        str(tmp_path / "compiled" / "a_seg.png")
    )
    assert same.all()
