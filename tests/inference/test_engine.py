"""The streaming engine as a Python API: ``predict_source`` yields results in input order
without writing anything, and stops cleanly when the caller stops early."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import sapiens2
from sapiens2.inference import Predictor, PredictStats, predict_source
from sapiens2.inference.results import SegResult


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    rng = np.random.default_rng(0)
    for name in ("c.png", "a.png", "b.png"):
        cv2.imwrite(str(root / name), rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    (root / "bad.png").write_bytes(b"not a png")
    return root


def test_predict_source_streams_results_in_order(folder, tmp_path):
    model = sapiens2.create_model("sapiens2_tiny", task="seg")
    predictor = Predictor("seg", model, input_size=(64, 48), batch_size=2)
    stats = PredictStats()
    got = list(predict_source(folder, predictor, stats=stats))
    assert [p.frame.name for p in got] == ["a", "b", "c"]
    assert all(isinstance(p.result, SegResult) for p in got)
    assert got[0].result.labels.shape == (40, 30)
    assert stats.frames == 3 and [p.name for p, _ in stats.skipped] == ["bad.png"]
    assert list(tmp_path.iterdir()) == []  # nothing written without a writer
    stream = predict_source([folder / "a.png", folder / "b.png"], predictor, batch_size=1)
    first = next(stream)
    stream.close()  # stopping early shuts the readers and threads down
    assert first.frame.name == "a"
