"""End-to-end ``sapiens2 predict`` on images, a folder and a generated video, with tiny random models."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from tests.conftest import small_pointmap_model, video_frames

import sapiens2
from sapiens2.cli.main import main
from sapiens2.inference.ply import read_ply

H, W = 64, 48
ARGS_SIZE = ["--input-size", "128", "96"]  # the pointmap model's head fixes 128x96 (its own size)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    folder = root / "folder"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    single = root / "single.png"
    cv2.imwrite(str(single), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (W, H))
    for _ in range(2):
        writer.write(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    writer.release()
    return {"folder": folder, "single": single, "video": video}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = {}
    torch.manual_seed(0)
    for task in ("pose", "seg", "normal", "pointmap", "albedo"):
        paths[task] = root / f"tiny_{task}.safetensors"
        if task == "pointmap":  # the tiny pointmap head sized for 128x96 inputs, not 512x384
            model = small_pointmap_model((8, 6))
        else:
            model = sapiens2.create_model("sapiens2_tiny", task=task)
        sapiens2.save_model(model, paths[task])
    return paths


def _run(task, models, media, out, *extra):
    size = [] if task == "pointmap" else ARGS_SIZE
    argv = [
        "predict",
        "--task",
        task,
        "--model",
        str(models[task]),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    argv += size + list(extra) + [str(media["folder"]), str(media["single"]), str(media["video"])]
    return main(argv)


def _picture(path, min_width):
    img = cv2.imread(str(path))
    assert img is not None, path
    assert img.shape[0] == H and img.shape[1] >= min_width
    return img


def _common_checks(out, capsys, picture_min_width):
    text = capsys.readouterr().out
    assert "5 frame(s) (3 image(s), 2 video frame(s) from 1 video(s))" in text
    assert "skipped 1 unreadable file(s)" in text and "broken.jpg" in text
    for name in ("a", "b", "single"):
        _picture(out / f"{name}.jpg", picture_min_width)
    frames = video_frames(out / "clip.mp4")
    assert len(frames) == 2 and frames[0].shape[0] == H


def test_predict_pose(models, media, tmp_path, capsys):
    out = tmp_path / "pose"
    assert _run("pose", models, media, out, "--batch-size", "2") == 0
    _common_checks(out, capsys, W)
    preds = json.loads((out / "predictions.json").read_text())
    assert (
        preds["video"] is None and preds["num_keypoints"] == 308 and preds["image_size"] == [H, W]
    )
    assert [f["image_name"] for f in preds["frames"]] == ["a", "b", "single"]
    inst = preds["frames"][0]["instances"]
    assert len(inst) == 1 and inst[0]["bbox"] == [0, 0, W - 1, H - 1]  # whole-image fallback
    kp = np.array(inst[0]["keypoints"])
    assert kp.shape == (308, 2) and np.isfinite(kp).all() and len(inst[0]["keypoint_scores"]) == 308
    for frame in preds["frames"]:  # out-of-image keypoints are flagged, the others are not
        for person in frame["instances"]:
            xy = np.array(person["keypoints"])
            outside = (xy[:, 0] < 0) | (xy[:, 0] >= W) | (xy[:, 1] < 0) | (xy[:, 1] >= H)
            assert person["keypoints_outside_image"] == np.flatnonzero(outside).tolist()
    video = json.loads((out / "clip_predictions.json").read_text())
    assert video["video"] == "clip.mp4" and [f["image_name"] for f in video["frames"]] == [
        "clip_000000",
        "clip_000001",
    ]
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == 5 and sorted({c["image_id"] for c in coco}) == [0, 1, 2, 3, 4]
    assert all(len(c["keypoints"]) == 3 * 308 and c["category_id"] == 1 for c in coco)
    assert coco[0]["bbox"] == [0, 0, W - 1, H - 1]


def test_predict_pose_with_boxes_json(models, media, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(
        json.dumps({"a.png": [[2, 3, 30, 40, 0.8], [10, 10, 40, 60]], "clip_000001": []})
    )
    out = tmp_path / "pose_boxes"
    assert (
        _run(
            "pose",
            models,
            media,
            out,
            "--boxes",
            str(boxes),
            "--no-flip-test",
            "--coco-layout",
            "coco17",
        )
        == 0
    )
    preds = json.loads((out / "predictions.json").read_text())
    a = preds["frames"][0]["instances"]
    assert [i["bbox"] for i in a] == [[2, 3, 30, 40], [10, 10, 40, 60]] and a[0][
        "bbox_score"
    ] == 0.8
    video = json.loads((out / "clip_predictions.json").read_text())
    assert len(video["frames"][0]["instances"]) == 1 and video["frames"][1]["instances"] == []
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == 2 + 1 + 1 + 1  # a.png: 2 boxes; b, single, first video frame: whole image
    assert all(len(c["keypoints"]) == 3 * 17 for c in coco)
    nose = np.array(
        coco[0]["keypoints"][:2]
    )  # COCO-17 starts with the nose, as does the 308 layout
    np.testing.assert_allclose(nose, a[0]["keypoints"][0], atol=1e-3)


def test_predict_seg(models, media, tmp_path, capsys):
    out = tmp_path / "seg"
    assert _run("seg", models, media, out, "--save-npy") == 0
    _common_checks(out, capsys, 2 * W)
    for name in ("a", "b", "single"):
        labels = cv2.imread(str(out / f"{name}_seg.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (H, W) and labels.dtype == np.uint8 and labels.max() < 29
        np.testing.assert_array_equal(np.load(out / f"{name}_seg.npy"), labels.astype(np.int64))
    assert cv2.imread(str(out / "clip" / "clip_000001_seg.png"), cv2.IMREAD_UNCHANGED).shape == (
        H,
        W,
    )


def test_predict_normal_with_seg_masks(models, media, tmp_path, capsys):
    seg_out = tmp_path / "seg_for_masks"
    assert _run("seg", models, media, seg_out) == 0
    capsys.readouterr()
    out = tmp_path / "normal"
    assert _run("normal", models, media, out, "--mask-dir", str(seg_out)) == 0
    _common_checks(out, capsys, 2 * W)
    for name in ("a", "single"):
        n = np.load(out / f"{name}_normal.npy")
        assert n.shape == (H, W, 3) and n.dtype == np.float32 and np.isfinite(n).all()
        assert np.linalg.norm(n, axis=-1).max() <= 1 + 1e-5
        pic = cv2.imread(str(out / f"{name}_normal.png"))[..., ::-1]
        fg = cv2.imread(str(seg_out / f"{name}_seg.png"), cv2.IMREAD_UNCHANGED) > 0
        assert (pic[~fg] == 0).all()  # background masked to black
        expected = np.clip((n[fg] + 1) * 0.5 * 255, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(pic[fg], expected)
    assert np.load(out / "clip" / "clip_000000_normal.npy").shape == (H, W, 3)


def test_predict_pointmap(models, media, tmp_path, capsys):
    out = tmp_path / "pointmap"
    assert _run("pointmap", models, media, out) == 0
    _common_checks(out, capsys, 2 * W)
    for name in ("a", "single"):
        depth = np.load(out / f"{name}_depth.npy")
        assert depth.shape == (H, W) and depth.dtype == np.float32 and np.isfinite(depth).all()
        pts, cols = read_ply(out / f"{name}.ply")
        assert pts.shape == cols.shape and pts.shape[0] == int((depth > 0).sum())
        if len(pts):
            assert (pts[:, 2] > 0).all()
        assert cv2.imread(str(out / f"{name}_depth.png")).shape == (H, W, 3)
        xyz = np.load(out / f"{name}_points.npy")
        assert xyz.shape == (H, W, 3) and xyz.dtype == np.float32
        np.testing.assert_array_equal(xyz[..., 2], depth)
        camera = json.loads((out / f"{name}_camera.json").read_text())
        assert camera["image_size"] == [H, W] and "K_fit" in camera
        if camera["scale"] > 0:  # 128x96 input, 64x48 image: the net's 768 / s is twice the image's
            assert camera["focal_length_px"][0] == pytest.approx(768 / camera["scale"] / 2, 1e-3)
        else:  # an untrained model's scale may be negative: no focal length
            assert camera["focal_length_px"] is None and camera["K"] is None
    assert (out / "clip" / "clip_000001.ply").is_file()


def test_predict_albedo_with_mask_model(models, media, tmp_path, capsys):
    out = tmp_path / "albedo"
    assert (
        _run("albedo", models, media, out, "--batch-size", "3", "--mask-model", str(models["seg"]))
        == 0
    )
    _common_checks(out, capsys, 2 * W)
    seg_out = tmp_path / "seg"
    assert _run("seg", models, media, seg_out) == 0
    for name in ("a", "b"):
        alb = cv2.imread(str(out / f"{name}_albedo.png"))
        assert alb.shape == (H, W, 3) and alb.dtype == np.uint8
        background = cv2.imread(str(seg_out / f"{name}_seg.png"), cv2.IMREAD_UNCHANGED) == 0
        assert (
            background.any() and (alb[background] == 100).all()
        )  # the seg model's background is gray


@pytest.mark.parametrize("task", ["seg", "pointmap", "pose"])
def test_no_pictures_writes_the_same_data_files_and_no_pictures(models, media, tmp_path, task):
    assert _run(task, models, media, tmp_path / "all") == 0
    assert _run(task, models, media, tmp_path / "data", "--no-pictures") == 0

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    everything, data = files(tmp_path / "all"), files(tmp_path / "data")
    pictures = {p for p in everything if p.suffix in (".jpg", ".mp4")}
    assert pictures and not {p for p in data if p.suffix in (".jpg", ".mp4")}
    assert set(data) == set(everything) - pictures
    for rel, blob in data.items():  # identical data files (PNG, npy, ply, JSON)
        assert blob == everything[rel], rel


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """7 frames that alternate between flat and noisy, so that the predicted classes change."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (W, H))
    for i in range(7):
        flat = np.full((H, W, 3), 40 * i, np.uint8)
        writer.write(flat if i % 2 else rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    writer.release()
    assert len(video_frames(path)) == 7
    return path


@pytest.mark.parametrize("task", ["pose", "seg", "normal", "pointmap", "albedo"])
def test_every_video_frame_is_in_the_output_video(models, long_video, tmp_path, task):
    out = tmp_path / task
    size = [] if task == "pointmap" else ARGS_SIZE
    argv = ["predict", "--task", task, "--model", str(models[task]), "--out", str(out)]
    assert main([*argv, "--device", "cpu", *size, str(long_video)]) == 0
    frames = video_frames(out / "long.mp4")
    assert len(frames) == 7 and len({f.shape for f in frames}) == 1


def test_wrong_task_checkpoint_is_a_clear_error(models, media, tmp_path, capsys):
    argv = [
        "predict",
        "--task",
        "pose",
        "--model",
        str(models["seg"]),
        "--out",
        str(tmp_path / "x"),
        str(media["single"]),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is a seg checkpoint, but --task pose was given" in err and "tiny_seg.safetensors" in err


def test_missing_input_and_nothing_readable(models, media, tmp_path, capsys):
    base = [
        "predict",
        "--task",
        "seg",
        "--model",
        str(models["seg"]),
        "--out",
        str(tmp_path / "y"),
        "--device",
        "cpu",
    ]
    assert main([*base, str(tmp_path / "nope.png")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main([*base, str(media["folder"] / "broken.jpg")]) == 1
    assert main([*base, "--boxes", str(tmp_path / "b.json"), str(media["single"])]) == 2
    assert "--boxes is only used with --task pose" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("task", "io_workers", "in_flight", "processes"),
    [("seg", 1, 1, False), ("seg", 3, 2, False), ("pose", 3, 2, False), ("pose", 2, 2, True)],
)
def test_predict_items_overlaps_writing_and_matches_the_serial_writer(
    models, media, tmp_path, task, io_workers, in_flight, processes
):
    """The background writer (one or several rendering threads or processes, frames decoded on
    one or several threads, one or two batches predicted at once) writes the same files as
    writing each result in turn, in order, and reports where the time went."""
    from sapiens2.inference import Predictor
    from sapiens2.inference.engine import predict_items
    from sapiens2.inference.media import FrameReader, expand_media
    from sapiens2.inference.writer import PredictionWriter

    items = expand_media([str(media["folder"]), str(media["video"]), str(media["single"])])
    predictor = Predictor(task, sapiens2.load_model(models[task]), input_size=(128, 96))
    stats = predict_items(predictor, items, PredictionWriter(task, tmp_path / "bg"),
                          batch_size=2, progress=False, io_workers=io_workers,
                          in_flight=in_flight, render_processes=processes)  # fmt: skip
    assert stats.frames == 5 and len(stats.skipped) == 1  # 3 images + 2 video frames; broken.jpg
    assert stats.seconds >= stats.predict_seconds > 0 and stats.write_seconds > 0

    serial = PredictionWriter(task, tmp_path / "serial")
    with FrameReader(items) as reader:
        for frame in reader:
            if frame.error is None:
                serial.write(frame, predictor.predict(frame.rgb))
    serial.close()
    pattern = "*_seg.png" if task == "seg" else "*.jpg"
    got = sorted(p.relative_to(tmp_path / "bg") for p in (tmp_path / "bg").rglob(pattern))
    want = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob(pattern))
    assert got == want and len(got) == (5 if task == "seg" else 3)
    for rel in got:
        a = cv2.imread(str(tmp_path / "bg" / rel), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "serial" / rel), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b)
    if task == "pose":  # records and COCO image ids in frame order
        for name in ("predictions.json", "clip_predictions.json", "coco_results.json"):
            a = json.loads((tmp_path / "bg" / name).read_text())
            b = json.loads((tmp_path / "serial" / name).read_text())
            assert a == b, name


def test_prediction_writer_sends_only_its_settings_to_render_processes(models, media, tmp_path):
    """A writer with an open video and pose records pickles (for render processes) to one with
    the same settings and none of that state, and renders the same files."""
    import pickle

    from sapiens2.inference import Predictor
    from sapiens2.inference.media import FrameReader, expand_media
    from sapiens2.inference.writer import PredictionWriter

    predictor = Predictor("pose", sapiens2.load_model(models["pose"]), input_size=(128, 96))
    writer = PredictionWriter("pose", tmp_path / "a", kpt_thr=0.2, pictures=True)
    with FrameReader(expand_media([str(media["video"])])) as reader:
        first = next(iter(reader))
    result = predictor.predict(first.rgb)
    writer.write(dataclasses.replace(first, last=False), result)  # leaves the video open
    assert writer._videos and writer.outputs._frames
    copy = pickle.loads(pickle.dumps(writer))
    assert (copy.task, copy.out, copy.options.kpt_thr, copy.pictures) == (
        "pose",
        tmp_path / "a",
        0.2,
        True,
    )
    assert not copy._videos and not copy.outputs._frames and not copy.outputs._coco
    assert not copy.written
    image = dataclasses.replace(first, item=dataclasses.replace(first.item, kind="image"))
    [picture] = copy.render(image, result).paths
    assert picture.name == "clip_000000.jpg" and picture.is_file()
    writer.close()


def test_background_writer_reraises_writer_errors(tmp_path):
    from sapiens2.errors import OutputError
    from sapiens2.inference.writer import BackgroundWriter

    class Failing:
        closed = False

        def render(self, frame, result):
            raise OSError("disk full")

        def close(self):
            self.closed = True

    inner = Failing()
    background = BackgroundWriter(inner)
    background.submit(None, None)
    with pytest.raises(OutputError, match="writing predictions failed: disk full"):
        background.close()
    assert inner.closed


@pytest.mark.parametrize("native", [True, False])
def test_default_dtype_is_bf16_only_on_native_hardware(
    models, media, tmp_path, monkeypatch, native
):
    import sapiens2.checkpoints
    from sapiens2 import device

    monkeypatch.setattr(device, "native_bf16", lambda d: native)
    loaded = []
    real_load = sapiens2.checkpoints.load_model

    def spy(source, **kwargs):
        model = real_load(source, **kwargs)
        loaded.append(next(model.parameters()).dtype)
        return model

    monkeypatch.setattr(sapiens2.checkpoints, "load_model", spy)
    assert _run("seg", models, media, tmp_path / "auto", "--no-pictures") == 0
    assert _run("seg", models, media, tmp_path / "fp32", "--no-pictures", "--dtype", "fp32") == 0
    assert loaded == [torch.bfloat16 if native else torch.float32, torch.float32]
