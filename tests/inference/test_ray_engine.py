"""``sapiens2 predict --engine ray``: the input listing (folders, shards, file:// and in-memory
fsspec URLs), the manifests, and end to end in a local Ray on 2 CPUs against local ``predict``."""

from __future__ import annotations

import json
import shutil
import uuid

import cv2
import fsspec
import numpy as np
import pytest
import torch

from sapiens2.cli.main import main
from sapiens2.data.image import read_image
from sapiens2.data.shards import write_image_shards
from sapiens2.errors import UsageError
from sapiens2.inference.ray_engine import (
    REPORT_NAME,
    STATE_DIR,
    InputRef,
    decode_input,
    list_inputs,
    load_done,
)

H, W = 64, 48
SIZE = ["--input-size", "128", "96"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_media")
    folder = root / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        ext = "jpg" if i == 2 else "png"
        cv2.imwrite(str(folder / f"im{i}.{ext}"), rng.integers(0, 255, (H, W, 3), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return folder


@pytest.fixture(scope="module")
def models(tiny_models):
    return tiny_models


# ------------------------------------------------------------------------- listing and reading
def test_folder_listing_names_and_pixels_match_local_predict(images):
    refs = list_inputs([images])
    assert [r.name for r in refs] == ["broken", "im0", "im1", "im2", "im3", "im4"]
    assert refs[3].key == "im2.jpg" and refs[3].offset == -1
    ok = decode_input(refs[1])
    assert np.array_equal(ok, read_image(images / "im0.png"))
    with pytest.raises(ValueError, match=r"cannot decode image .*broken\.jpg"):
        decode_input(refs[0])


def test_file_url_lists_and_reads_like_the_folder(images):
    refs = list_inputs([f"file://{images}"])
    assert [r.name for r in refs] == [r.name for r in list_inputs([images])]
    assert all(r.source.startswith("file://") for r in refs)
    assert np.array_equal(decode_input(refs[4]), read_image(images / "im3.png"))


def test_shards_in_memory_fsspec_are_listed_and_read_with_ranged_reads(images, tmp_path):
    files = sorted(images.glob("im*"))
    write_image_shards(files, tmp_path / "shards", samples_per_shard=3)
    local = list_inputs([tmp_path / "shards"])
    assert [r.name for r in local] == [f"{i:09d}" for i in range(5)]
    assert local[2].key == "000000002.jpg" and local[2].offset > 0
    assert list_inputs([f"{tmp_path}/shards/*.tar"]) == local  # a glob of shards
    fs = fsspec.filesystem("memory")
    url = f"memory://ray-{uuid.uuid4().hex}"
    for p in sorted((tmp_path / "shards").iterdir()):
        fs.pipe(f"{url}/shards/{p.name}", p.read_bytes())
    fs.pipe(f"{url}/loose/x.png", (images / "im4.png").read_bytes())
    remote = list_inputs([f"{url}/shards", f"{url}/loose/x.png"])
    assert [r.name for r in remote] == [r.name for r in local] + ["x"]
    for ref, path in zip(remote, [*files, images / "im4.png"], strict=True):
        assert np.array_equal(decode_input(ref), read_image(path)), ref


def test_videos_are_refused_with_the_local_engine_named(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(UsageError, match=r"clip\.mp4 is a video: .*--engine local"):
        list_inputs([tmp_path / "clip.mp4"])


def test_a_done_entry_counts_only_while_its_files_have_their_sizes(tmp_path):
    manifests = tmp_path / STATE_DIR / "manifests"
    manifests.mkdir(parents=True)
    (tmp_path / "a_seg.png").write_bytes(b"12345")
    (tmp_path / "b_seg.png").write_bytes(b"123")
    items = [
        {"name": n, "source": f"{n}.png", "key": f"{n}.png", "status": "done",
         "files": {f"{n}_seg.png": 5}}
        for n in ("a", "b", "c")
    ]  # fmt: skip
    items.append({"name": "d", "source": "d.png", "key": "d.png", "status": "unreadable"})
    (manifests / "x.json").write_text(json.dumps({"digest": "D", "items": items}))
    (manifests / "y.json").write_text("{not json")
    done = load_done(tmp_path, "D")
    assert sorted(e["name"] for e in done.values()) == ["a"]  # b: other size, c: missing
    assert load_done(tmp_path, "other settings") == {}
    assert InputRef("a", "a.png", "a.png").offset == -1


def test_other_settings_drop_the_previous_manifests(tmp_path):
    from sapiens2.inference.ray_engine import _start_state

    _start_state(tmp_path, "D1", {"model": "a"})
    manifest = tmp_path / STATE_DIR / "manifests" / "x.json"
    manifest.write_text("{}")
    _start_state(tmp_path, "D1", {"model": "a"})  # the same settings keep them
    assert manifest.exists()
    _start_state(tmp_path, "D2", {"model": "b"})
    assert not manifest.exists()
    run = json.loads((tmp_path / STATE_DIR / "run.json").read_text())
    assert run["digest"] == "D2" and run["settings"] == {"model": "b"}


# ------------------------------------------------------------------------- end to end on Ray
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 << 20
    )
    yield
    ray.shutdown()


def _predict(task, models, out, *sources, ray_workers=0, extra=()):
    argv = ["predict", "--task", task, "--model", str(models[task]), "--out", str(out),
            "--device", "cpu", "--dtype", "fp32", "--batch-size", "2", *SIZE, *extra]  # fmt: skip
    if task == "pose":
        argv += ["--detector", "none"]
    if ray_workers:
        argv += ["--engine", "ray", "--num-workers", str(ray_workers), "--cpus-per-worker", "0.5"]
    return main(argv + [str(s) for s in sources])


def _files(out):
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and STATE_DIR not in p.parts and p.name != REPORT_NAME
    }


@pytest.mark.slow
def test_ray_seg_equals_local_predict_and_reports_the_corrupt_input(
    ray_local, models, images, tmp_path, capsys
):
    assert _predict("seg", models, tmp_path / "local", images) == 0
    capsys.readouterr()
    # two actors, the inputs as a file:// URL
    assert _predict("seg", models, tmp_path / "ray", f"file://{images}", ray_workers=2) == 0
    assert "5 image(s) predicted" in capsys.readouterr().out
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(remote) and len(local) == 10  # <name>.jpg, <name>_seg.png
    assert [k for k in local if local[k] != remote[k]] == []  # byte-equal files
    report = json.loads((tmp_path / "ray" / REPORT_NAME).read_text())
    assert report["done_now"] == 5 and report["images"] == 6
    (bad,) = report["unreadable"]
    assert bad["input"].endswith("imgs/broken.jpg") and "cannot decode image" in bad["reason"]


@pytest.mark.slow
def test_ray_pose_resumes_after_a_crash_and_equals_local_predict(
    ray_local, models, images, tmp_path, capsys
):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actor (one CPU): the same float32 summation order
    try:
        assert _predict("pose", models, tmp_path / "local", images) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ray"
    (out / "im4.jpg").mkdir(parents=True)  # the last picture cannot be written: the run dies
    with pytest.raises(Exception, match=r"im4\.jpg"):
        # the local run's batches of 2 (a batch's size changes float32 results in the last bits)
        _predict("pose", models, out, images, ray_workers=1)
    assert not (out / "predictions.json").exists()
    finished = len(load_done(out, json.loads((out / STATE_DIR / "run.json").read_text())["digest"]))
    assert 1 <= finished <= 4  # the batches done before the crash have their manifests
    (out / "im4.jpg").rmdir()
    capsys.readouterr()
    assert _predict("pose", models, out, images, ray_workers=1) == 0
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["done_before"] == finished and report["done_now"] == 5 - finished
    local, remote = _files(tmp_path / "local"), _files(out)
    assert sorted(local) == sorted(remote)  # pictures, predictions.json, coco_results.json
    assert [k for k in local if local[k] != remote[k]] == []  # byte-equal files
    # a third run has nothing left to do (the corrupt input is tried again, and reported)
    assert _predict("pose", models, out, images, ray_workers=1) == 0
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["done_before"] == 5 and report["done_now"] == 0 and len(report["unreadable"]) == 1
    assert _files(out) == remote
    shutil.rmtree(tmp_path / "local")


# ------------------------------------------------------------------------- shards and Parquet
def _untar(path):
    import tarfile

    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def _as_member(file):  # <name>_seg.png -> <name>.seg.png (our names have no dots)
    stem, _, ext = file.partition(".")
    name, _, part = stem.partition("_")
    return f"{name}.{part}.{ext}" if part else file


@pytest.mark.slow
def test_ray_shards_hold_the_local_files_and_resume_one_deleted_shard(
    ray_local, models, images, tmp_path
):
    one = ["--batch-size", "1"]  # forwards of one image, locally and in the actors
    assert _predict("seg", models, tmp_path / "local", images, extra=one) == 0
    out = tmp_path / "ray"
    fmt = ["--output-format", "shards", "--shard-size", "2", *one]
    assert _predict("seg", models, out, images, ray_workers=1, extra=fmt) == 0
    shards = sorted((out / "shards").glob("seg-*.tar"))
    assert 3 <= len(shards) <= 4  # 6 rows (one unreadable) in actor batches of at most 2
    members = {}
    for shard in shards:
        members.update(_untar(shard))
    local = {_as_member(k): v for k, v in _files(tmp_path / "local").items()}
    assert sorted(members) == sorted(local) and len(local) == 10
    assert [k for k in local if local[k] != members[k]] == []  # byte-equal members
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["done_now"] == 5 and report["output_format"] == "shards"
    # a lost shard: a re-run redoes its images only, into a new shard; the others stay as they are
    gone = next(s for s in shards if len(_untar(s)) == 4)
    before = {s.name: (s.stat().st_mtime_ns, s.read_bytes()) for s in shards if s != gone}
    lost = sorted(_untar(gone))
    gone.unlink()
    assert _predict("seg", models, out, images, ray_workers=1, extra=fmt) == 0
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["done_now"] == 2 and report["done_before"] == 3
    after = sorted((out / "shards").glob("seg-*.tar"))
    assert {s.name: (s.stat().st_mtime_ns, s.read_bytes()) for s in after if s.name in before} == before  # fmt: skip
    redone = {}  # the lost images (and the unreadable one, tried again) in new shards
    for shard in after:
        if shard.name not in before:
            redone.update(_untar(shard))
    assert redone == {k: local[k] for k in lost}


@pytest.mark.slow
def test_ray_parquet_to_a_file_url_equals_local_pose(ray_local, models, images, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from sapiens2.inference.export import pose_frame_record
    from sapiens2.inference.results import PoseResult

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actor (one CPU): the same float32 summation order
    try:
        assert (
            _predict("pose", models, tmp_path / "local", images, extra=["--batch-size", "1"]) == 0
        )
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ray"
    fmt = ["--output-format", "parquet", "--shard-size", "3", "--batch-size", "1"]
    assert _predict("pose", models, f"file://{out}", images, ray_workers=1, extra=fmt) == 0
    local = _files(tmp_path / "local")
    for name in ("predictions.json", "coco_results.json"):  # end-of-run files, the same bytes
        assert (out / name).read_bytes() == local[name]
    frames = {f["image_name"]: f for f in json.loads(local["predictions.json"])["frames"]}
    tables = sorted((out / "parquet").glob("pose-*.parquet"))
    rows = [r for t in tables for r in pq.read_table(t).to_pylist()]
    assert sorted(r["name"] for r in rows) == sorted(frames) and len(rows) == 5
    for row in rows:
        n = len(row["box_scores"])
        result = PoseResult(
            np.asarray(row["keypoints"], np.float32).reshape(n, -1, 2),
            np.asarray(row["keypoint_scores"], np.float32).reshape(n, -1),
            np.asarray(row["boxes"], np.float32).reshape(n, 4),
            np.asarray(row["box_scores"], np.float32),
            (row["height"], row["width"]),
        )
        assert pose_frame_record(result, row["name"]) == frames[row["name"]]  # equal arrays
        (member,) = row["members"]  # the picture, in the tar beside the Parquet file
        assert _untar(out / row["shard"])[member] == local[member]
