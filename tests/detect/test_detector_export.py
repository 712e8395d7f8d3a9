"""The RTMDet detector exported to ``.pt2`` and ONNX: the loaded file is a detector whose network
returns the eager network's maps and whose detections are the eager detector's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.export.conftest import assert_export_close

from sapiens2.detect import RTMDetDetector
from sapiens2.export import export_model, load_exported

SIZE = 160  # a smaller square input than the official 640 keeps the test cheap


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_detector_round_trip(fmt, tmp_path, tiny_detector, fixture_rgb):
    if fmt == "onnx":
        for name in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(name)
    out = tmp_path / f"det.{fmt}"
    # onnxscript's optimizer is exercised by tests/export (it is most of an ONNX export's time)
    contract = export_model(tiny_detector, out, input_size=(SIZE, SIZE), optimize=False)
    assert contract.channel_order == "BGR" and contract.input.shape == (1, 3, SIZE, SIZE)
    assert contract.mean == tiny_detector.test_config.mean_bgr
    assert contract.resize == "keep_ratio_pad"
    loaded = load_exported(out)  # an RTMDetDetector around the exported network
    assert isinstance(loaded, RTMDetDetector) and loaded.test_config.input_size == SIZE
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, ref = loaded.model(x), tiny_detector.model(x)
    assert len(got[0]) == len(got[1]) == 3
    for level in range(3):
        assert_export_close(got[0][level], ref[0][level], f"cls level {level}")
        assert_export_close(got[1][level], ref[1][level], f"bbox level {level}")
    eager = RTMDetDetector(tiny_detector.model, replace(tiny_detector.test_config, input_size=SIZE))
    found, expected = loaded(fixture_rgb), eager(fixture_rgb)
    assert found.boxes.shape == expected.boxes.shape
    # Near-equal scores may swap places in the sorted list: match each expected detection to
    # the nearest found one. The maps agree within the export tolerance (above); with random
    # weights that moves scores by up to ~4e-4 and boxes by ~0.1 px (exp() of the regression).
    box = np.abs(expected.boxes[:, None, :] - found.boxes[None, :, :]).max(-1)  # (N, N) px
    score = np.abs(expected.scores[:, None] - found.scores[None, :])  # (N, N)
    nearest = (box / 0.5 + score / 2e-3).argmin(1)
    rows = np.arange(len(nearest))
    assert box[rows, nearest].max() <= 0.5 and score[rows, nearest].max() <= 2e-3
    assert len(set(nearest.tolist())) == len(nearest)  # one to one


def test_detector_input_must_be_square(tmp_path, tiny_detector):
    with pytest.raises(ValueError, match="square input"):
        export_model(tiny_detector, tmp_path / "det.pt2", input_size=(160, 128))
