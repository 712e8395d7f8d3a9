"""``sapiens2 predict`` with hostile and broken inputs (issue 24): outputs stay under --out, inputs
are never overwritten, one run per --out, huge images skipped before decoding, bounded dense
outputs and crops, validated boxes, no NaN in JSON, one failing input does not lose the others,
and every user error is one line."""

from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.hostile import fifo, huge_png
from tests.inference.fakes import PeakyPoseModel

import sapiens2
from sapiens2.cli.main import main
from sapiens2.errors import BoxesError, OutputError
from sapiens2.inference import postprocess
from sapiens2.inference.boxes import as_boxes, load_boxes_json
from sapiens2.inference.engine import predict_items
from sapiens2.inference.media import expand_media, safe_name
from sapiens2.inference.predictor import PosePredictor, Predictor
from sapiens2.outdir import OutputLock

H, W = 40, 30


def _image(path, seed=0):
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def models(tiny_models):
    return tiny_models


def _predict(task, models, out, *inputs, extra=()):
    argv = ["predict", "--task", task, "--model", str(models[task]), "--out", str(out)]
    argv += ["--device", "cpu", "--input-size", "64", "48", "--no-pictures", "--dtype", "fp32"]
    return main([*argv, *extra, *map(str, inputs)])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_video_named_dots_writes_under_out(models, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    video = src / "...mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (W, H))
    for i in range(2):
        writer.write(np.full((H, W, 3), 40 * i, np.uint8))
    writer.release()
    assert video.stem == ".."
    out = tmp_path / "deep" / "out"
    assert _predict("seg", models, out, video) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "in"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]
    assert sorted(p.name for p in (out / "__").iterdir()) == [
        "___000000_seg.png",
        "___000001_seg.png",
    ]
    assert safe_name("..") == "__" and safe_name(".") == "__" and safe_name("a\x00/b") == "a__b"
    assert safe_name(".hidden") == ".hidden" and safe_name("été 1") == "été 1"


def test_out_holding_the_inputs_is_refused_and_nothing_is_overwritten(models, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = _image(photos / "photo.jpg")
    before = photo.read_bytes()
    assert _predict("seg", models, photos, photos) == 2
    assert "holds the input" in _one_line(capsys)
    os.chdir(photos)
    try:
        assert _predict("seg", models, ".", "photo.jpg") == 2
    finally:
        os.chdir(tmp_path)
    assert "holds the input" in _one_line(capsys)
    assert photo.read_bytes() == before and sorted(photos.iterdir()) == [photo]


def test_unusable_out_is_one_line(models, tmp_path, capsys, monkeypatch):
    image = _image(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    assert _predict("seg", models, tmp_path / "file", image) == 2
    assert "is a file, not a folder" in _one_line(capsys)
    assert _predict("seg", models, tmp_path / "file" / "sub", image) == 2
    assert "is a file, not a folder" in _one_line(capsys)
    import sapiens2.outdir

    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: let the check see what a user would
        monkeypatch.setattr(sapiens2.outdir.os, "access", lambda *a: False)
    assert _predict("seg", models, locked, image) == 2
    assert "not writable" in _one_line(capsys)


def test_a_second_run_into_the_same_out_is_refused(models, tmp_path, capsys):
    image, out = _image(tmp_path / "a.png"), tmp_path / "out"
    out.mkdir()
    with OutputLock(out, "the other run"):  # as another process holding --out
        assert _predict("seg", models, out, image) == 2
        err = _one_line(capsys)
        assert "in use by another run" in err and "the other run" in err
        with pytest.raises(OutputError, match="in use"):
            OutputLock(out).acquire()
    assert _predict("seg", models, out, image) == 0
    assert (out / "a_seg.png").is_file() and not (out / ".sapiens2.lock").exists()


def test_huge_image_is_skipped_before_decoding_and_the_others_are_written(
    models, tmp_path, capsys, monkeypatch
):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        _image(src / f"good_{i}.png", seed=i)
    huge_png(src / "huge.png")  # 30000 x 30000 declared, ~100 bytes
    assert (src / "huge.png").stat().st_size < 1000
    decoded = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda d, f: decoded.append(len(d)) or real_imdecode(d, f))
    out = tmp_path / "out"
    assert _predict("pose", models, out, src, extra=["--detector", "none"]) == 0
    assert len(decoded) == 6  # the huge one never reached the decoder
    text = capsys.readouterr().out
    assert "skipped 1" in text and "huge.png" in text
    coco = json.loads((out / "coco_results.json").read_text())
    assert sorted({r["image_name"] for r in coco}) == [f"good_{i}" for i in range(6)]
    # over OpenCV's own 2**30 limit with ours lifted: a skip, not a crash
    huge_png(src / "huge.png", 40000, 30000)
    assert _predict("seg", models, tmp_path / "o2", src, extra=["--max-megapixels", "0"]) == 0
    assert "huge.png" in capsys.readouterr().out
    assert len(list((tmp_path / "o2").glob("good_*_seg.png"))) == 6


def test_special_files_are_skipped(models, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "a.png")
    fifo(src / "pipe.jpg")
    (src / "zero.png").symlink_to("/dev/zero")
    assert [i.path.name for i in expand_media([src])] == ["a.png"]
    with caplog.at_level(logging.WARNING):
        items = expand_media([src / "pipe.jpg", src / "zero.png", src / "a.png"])
    assert [i.path.name for i in items] == ["a.png"]
    assert "not a regular file" in caplog.text


def test_seg_labels_of_a_huge_output_are_made_in_bounded_bands(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(29, 16, 12, generator=gen)
    size = (151, 129)
    full = postprocess._resize(logits, size)
    top2 = full.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4  # pixels without a near-tie
    biggest = []
    real = F.interpolate

    def recording(x, *args, **kwargs):
        y = real(x, *args, **kwargs)
        biggest.append(y.numel())
        return y

    monkeypatch.setattr(F, "interpolate", recording)
    band = 29 * size[1] * 10  # ten rows of resized logits
    labels = postprocess.seg_labels_tensor(logits, size, band_values=band)
    assert max(biggest) <= band + 29 * size[1]  # + the second source row of the band's end
    expected = full.max(dim=0).indices.to(torch.uint8)
    assert clear.float().mean() > 0.99
    assert torch.equal(labels[clear], expected[clear])
    assert (labels != expected).float().mean() < 1e-3


def test_boxes_json_is_validated(tmp_path):
    def load(value, **kw):
        path = tmp_path / "b.json"
        path.write_text(value if isinstance(value, str) else json.dumps(value))
        return load_boxes_json(path, **kw)

    with pytest.raises(BoxesError, match=r"x2 > x1 and y2 > y1; box 0 is \[5.0, 5.0, 5.0, 9.0\]"):
        load({"a.jpg": [[5, 5, 5, 9]]})
    with pytest.raises(BoxesError, match="of numbers"):
        load({"a": [["1", 0, 2, 2]]})
    with pytest.raises(BoxesError, match=r"boxes must be numbers \(int too large"):
        load('{"a": [[1' + "0" * 400 + ", 0, 2, 2]]}")  # a 400-digit integer
    with pytest.raises(BoxesError, match=r"beyond \+-1e\+07"):
        load({"a": [[0, 0, 1e30, 2]]})
    for inf in ("Infinity", "1e400"):
        with pytest.raises(BoxesError, match="NaN or infinite"):
            load('{"a": [[0, 0, ' + inf + ", 2]]}")
    with pytest.raises(BoxesError, match="of numbers"):
        load({"a": [[0, 0, True, 2]]})
    many = {"a.jpg": [[0, 0, 10, 10]] * 20000}
    with pytest.raises(BoxesError, match="20000 boxes for one image; at most 500"):
        load(many)
    assert load(many, max_boxes=None)["a.jpg"].shape == (20000, 5)
    with pytest.raises(BoxesError, match="at most 3"):
        as_boxes(np.ones((4, 4)) * [0, 0, 1, 1], max_boxes=3)


def test_many_boxes_are_cropped_and_run_in_bounded_batches(monkeypatch):
    import sapiens2.inference.runners as predictor_module

    model, crops_made = PeakyPoseModel(), []
    real = predictor_module.crop_people

    def counting(image, boxes, hw):
        crops_made.append(len(boxes))
        return real(image, boxes, hw)

    monkeypatch.setattr(predictor_module, "crop_people", counting)
    batches = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: batches.append(len(x)) or forward(x))
    pred = PosePredictor(model, input_size=(64, 48), batch_size=4, max_boxes=None)
    boxes = np.tile([[0, 0, 20, 30]], (13, 1)).astype(np.float32)
    boxes[:, 2] += np.arange(13) % 5
    res = pred.predict(np.zeros((40, 30, 3), np.uint8), boxes=boxes)
    assert res.num_people == 13 and np.array_equal(res.boxes, boxes)
    assert crops_made == [4, 4, 4, 1] and max(batches) <= 2 * 4  # x2: the flipped copies
    limited = PosePredictor(model, input_size=(64, 48), max_boxes=12)
    with pytest.raises(BoxesError, match="13 boxes for one image; at most 12"):
        limited.predict(np.zeros((40, 30, 3), np.uint8), boxes=boxes)


def test_boxes_keys_matching_no_input_are_named(models, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "a.png")
    _image(src / "b.png")
    (tmp_path / "boxes.json").write_text(json.dumps({"a": [[0, 0, 9, 9]], "typo.png": []}))
    extra = ["--detector", "none", "--boxes", str(tmp_path / "boxes.json")]
    with caplog.at_level(logging.WARNING):
        assert _predict("pose", models, tmp_path / "out", src, extra=extra) == 0
    assert "1 key(s) match no input and are not used: typo.png" in caplog.text
    assert "no boxes for 1 image(s)" in caplog.text and "b.png" in caplog.text


def test_nonfinite_models_are_refused_and_json_never_holds_nan(models, tmp_path, capsys):
    image = _image(tmp_path / "a.png")
    pose = sapiens2.load_model(models["pose"])
    with torch.no_grad():
        pose.decode_head.conv_pose.bias.fill_(float("nan"))
    bad = sapiens2.save_model(pose, tmp_path / "nan_pose.safetensors")
    models = {"pose": bad}
    assert _predict("pose", models, tmp_path / "o1", image, extra=["--detector", "none"]) == 2
    assert "NaN or infinite values" in _one_line(capsys)
    extra = ["--detector", "none", "--allow-nonfinite"]
    assert _predict("pose", models, tmp_path / "o2", image, extra=extra) == 0

    def no_constants(name):
        raise AssertionError(f"{name} in JSON")

    for name in ("predictions.json", "coco_results.json"):
        data = json.loads((tmp_path / "o2" / name).read_text(), parse_constant=no_constants)
        assert data


def test_a_failing_input_does_not_lose_the_others(tmp_path):
    from sapiens2.inference.writer import PredictionWriter

    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        _image(src / f"img_{i}.png", seed=i)
    inner = PosePredictor(PeakyPoseModel(), input_size=(64, 48), batch_size=2, flip_test=False)

    class Picky:  # fails on one image, like a bad box or an out-of-memory would
        task, device = "pose", torch.device("cpu")

        def predict(self, images, **kwargs):
            if any(img.shape[0] == H and int(img[0, 0, 0]) == first_pixel for img in images):
                raise ValueError("this image is cursed")
            return inner.predict(images, **kwargs)

    first_pixel = int(cv2.imread(str(src / "img_2.png"))[0, 0, ::-1][0])
    writer = PredictionWriter("pose", tmp_path / "out", pictures=False)
    stats = predict_items(Picky(), expand_media([src]), writer, batch_size=2, progress=False)
    assert stats.frames == 4 and [name for name, _ in stats.failed] == ["img_2"]
    coco = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert sorted({r["image_name"] for r in coco}) == ["img_0", "img_1", "img_3", "img_4"]


def test_argument_errors_are_one_line(models, tmp_path, capsys):
    image = _image(tmp_path / "a.png")
    argv = ["predict", "--task", "seg", "--model", str(models["seg"]), "--out", str(tmp_path / "o")]
    for extra, message in (
        (["--input-size", "0", "0"], "--input-size must be two positive numbers"),
        (["--max-boxes", "0"], "--max-boxes must be >= 1"),
    ):
        assert main([*argv, *extra, str(image)]) == 2
        assert message in _one_line(capsys)
    with pytest.raises(ValueError, match="input_size must be two positive integers"):
        Predictor("seg", sapiens2.load_model(models["seg"]), input_size=(0, 0))
