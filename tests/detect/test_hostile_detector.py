"""A detector file's metadata is checked before use (issue 24): ranges, finite, known keys."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sapiens2.detect import DetectorCheckpointError, load_detector, save_detector


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_detector):
    path = tmp_path_factory.mktemp("det") / "det.safetensors"
    save_detector(tiny_detector, path)
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    return path, load_file(path), meta


def _with_metadata(saved, tmp_path, **changes):
    _, tensors, meta = saved
    meta = dict(meta)
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    out = tmp_path / "edited.safetensors"
    save_file(tensors, out, metadata=meta)
    return out


def _test_config(saved, **changes) -> str:
    tc = json.loads(saved[2]["test_config"])
    tc.update(changes)
    return json.dumps(tc)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"test_config": {"input_size": 64000}}, r"input_size must be an integer in \[32, 4096\]"),
        ({"bn_eps": "nan"}, r"bn_eps must be a finite number in \(0, 1\), got 'nan'"),
        ({"bn_eps": "-1"}, "bn_eps must be a finite number"),
        ({"classes": None}, "lacks 'classes'"),
        ({"exp_on_reg": "maybe"}, "exp_on_reg must be 'true' or 'false'"),
        ({"classes": "[1, 2]"}, "classes must be a non-empty JSON list of strings"),
        ({"test_config": "{not json"}, "test_config is not valid JSON"),
        ({"test_config": {"bogus": 1}}, r"unknown keys \['bogus'\]"),
        ({"test_config": {"score_thr": "high"}}, r"score_thr must be a number in \[0, 1\]"),
        ({"test_config": {"std_bgr": [1, 0, 1]}}, "std_bgr must be positive"),
        ({"test_config": {"max_per_img": 10**9}}, "max_per_img must be an integer"),
    ],
)
def test_detector_metadata_is_validated(saved, tmp_path, changes, message):
    changes = {
        k: _test_config(saved, **v) if isinstance(v, dict) else v for k, v in changes.items()
    }
    with pytest.raises(DetectorCheckpointError, match=message):
        load_detector(_with_metadata(saved, tmp_path, **changes))


def test_valid_metadata_still_loads(saved, tmp_path, tiny_detector):
    path = _with_metadata(saved, tmp_path, test_config=_test_config(saved, input_size=320))
    det = load_detector(path)
    assert det.test_config.input_size == 320 and det.classes == tiny_detector.classes
