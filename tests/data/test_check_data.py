"""``sapiens2 check-data`` and ``validate_dataset`` report every bad file by name."""

from __future__ import annotations

import json

import numpy as np

from sapiens2.cli.main import main
from sapiens2.data.datasets import validate_dataset
from sapiens2.data.formats import encode_png

from ._dataset_factory import write_dataset


def test_check_data_clean_and_broken(tmp_path, capsys):
    write_dataset(tmp_path, n=3)
    for task in ("pose", "seg", "normal", "pointmap", "albedo"):
        assert main(["check-data", "--data", str(tmp_path), "--task", task]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["errors"] == 0 and summary["checked"] == (4 if task == "pose" else 3)
    (tmp_path / "train" / "seg" / "s000.png").write_bytes(encode_png(np.zeros((5, 5), np.uint8)))
    (tmp_path / "train" / "seg" / "s002.png").write_bytes(
        encode_png(np.full((40, 30), 77, np.uint8))
    )
    assert main(["check-data", "--data", str(tmp_path), "--task", "seg"]) == 1
    out = capsys.readouterr().out
    assert "seg/s000.png: label image is 5x5" in out and "seg/s002.png: labels [77]" in out
    n, errors = validate_dataset(tmp_path, "val", "seg")
    assert n == 0 and "neither a dataset root with 'val/images'" in errors[0]
    assert main(["check-data", "--data", str(tmp_path / "nope"), "--task", "seg"]) == 2
