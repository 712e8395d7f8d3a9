"""The output formats of ``sapiens2 predict --engine ray`` without Ray: the store (a folder or an
fsspec URL), shard and Parquet batches against the files the writer writes, and the refusals.
End to end on Ray: tests/inference/test_ray_engine.py."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from sapiens2.cli.main import main
from sapiens2.data.shards import ShardIndex
from sapiens2.errors import UsageError
from sapiens2.inference.media import Frame, MediaItem
from sapiens2.inference.ray_engine import MANIFESTS, _drop_orphans, _manifests, load_done
from sapiens2.inference.ray_outputs import (
    OutputStore,
    ParquetOutput,
    ShardOutput,
    check_out,
    member_name,
    next_number,
)
from sapiens2.inference.results import PoseResult, SegResult
from sapiens2.inference.writer import PredictionWriter


def _frames(n: int, seed: int = 0) -> list[tuple[Frame, dict]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        name = f"im{i}" if i != 1 else "im.v1"  # a dot: the WebDataset key gets "_"
        item = MediaItem(path=Path(f"/data/{name}.png"), kind="image", name=name)
        frame = Frame(item=item, name=name, rgb=rng.integers(0, 255, (24, 16, 3), np.uint8))
        out.append((frame, {"name": name, "source": f"s3://b/{name}.png", "key": f"{name}.png"}))
    return out


def _numbers():
    counter = iter(range(7, 100))
    return lambda: next(counter)


def _memory_store() -> OutputStore:
    return OutputStore(f"memory://ray-out-{uuid.uuid4().hex}")


def test_member_names_follow_webdataset_keys():
    assert member_name("im0", "im0.jpg") == "im0.jpg"
    assert member_name("im0", "im0_seg.png") == "im0.seg.png"
    assert member_name("a.b", "a.b_depth.npy") == "a_b.depth.npy"
    assert member_name("im0", "im0.ply") == "im0.ply"
    with pytest.raises(ValueError, match="not named after"):
        member_name("im0", "im01_seg.png")


@pytest.mark.parametrize("root", ["memory", "path", "file"])
def test_store_round_trip(root, tmp_path):
    store = {
        "memory": _memory_store(),
        "path": OutputStore(tmp_path),
        "file": OutputStore(f"file://{tmp_path}"),
    }[root]
    assert store.size("a/x.tar") == -1 and store.list("a") == []
    store.put("a/x.tar", b"12345")
    store.put("a/y.json", memoryview(b"{}"))
    assert store.size("a/x.tar") == 5 and store.read("a/y.json") == b"{}"
    assert store.list("a") == ["a/x.tar", "a/y.json"]  # no .partial left behind
    store.remove("a/x.tar")
    store.remove("a/missing")
    assert store.list("a") == ["a/y.json"]
    if root != "memory":
        assert (tmp_path / "a" / "y.json").read_bytes() == b"{}"  # plain local files


def test_shard_numbers_go_on_after_the_highest():
    store = _memory_store()
    assert next_number(store, []) == 0
    names = ["shards/seg-000003.tar", ".sapiens2-ray/manifests/seg-000011.json", "x/abc.json"]
    assert next_number(store, names) == 12


@pytest.mark.parametrize("pictures", [True, False])
def test_a_shard_holds_the_bytes_the_files_layout_has(pictures, tmp_path):
    rng = np.random.default_rng(1)
    done = [(f, SegResult(rng.integers(0, 29, (24, 16), np.uint8)), ref) for f, ref in _frames(3)]
    files = PredictionWriter("seg", tmp_path / "files", pictures=pictures, save_npy=True)
    expected = {}
    for frame, result, _ in done:
        for path in files.render(frame, result).paths:
            expected[member_name(frame.name, path.name)] = path.read_bytes()
    store = _memory_store()
    writer = PredictionWriter("seg", None, pictures=pictures, save_npy=True)
    batch, containers, entries = ShardOutput(store, writer, lambda f, xs: list(map(f, xs)), _numbers()).write(done)  # fmt: skip
    assert batch == "seg-000007" and containers == ["shards/seg-000007.tar"]
    data = store.read("shards/seg-000007.tar")
    assert entries[0]["files"] == {"shards/seg-000007.tar": len(data)}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
        names = tar.getnames()
    assert members == expected and len(members) == 3 * (2 + pictures)
    assert entries[1]["members"] == [n for n in names if n.startswith("im_v1.")]
    index = ShardIndex(store.location("shards/seg-000007.tar"))  # our reader reads it back
    assert index.keys == ["im0", "im_v1", "im2"]
    assert index.read(1)["seg.png"] == expected["im_v1.seg.png"]


def test_parquet_rows_hold_pose_arrays_and_point_at_the_pictures(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(2)
    done = []
    for (frame, ref), people in zip(_frames(2), (2, 0), strict=True):
        kp = rng.uniform(0, 16, (people, 308, 2)).astype(np.float32)
        result = PoseResult(kp, rng.uniform(0, 1, (people, 308)).astype(np.float32),
                            rng.uniform(0, 16, (people, 4)).astype(np.float32),
                            np.ones(people, np.float32), (24, 16))  # fmt: skip
        done.append((frame, result, ref))
    store = _memory_store()
    writer = PredictionWriter("pose", None)
    output = ParquetOutput(store, writer, lambda f, xs: list(map(f, xs)), _numbers())
    batch, containers, entries = output.write(done)
    assert batch == "pose-000007"
    assert containers == ["parquet/pose-000007.parquet", "parquet/pose-000007.tar"]
    table = pq.read_table(io.BytesIO(store.read("parquet/pose-000007.parquet")))
    rows = table.to_pylist()
    assert [r["name"] for r in rows] == ["im0", "im.v1"] and rows[1]["source"] == "s3://b/im.v1.png"
    assert rows[0]["width"] == 16 and rows[0]["height"] == 24 and rows[0]["task"] == "pose"
    for row, (_, result, _) in zip(rows, done, strict=True):
        assert np.array_equal(np.asarray(row["keypoints"], np.float32).reshape(-1, 308, 2), result.keypoints)  # fmt: skip
        assert np.array_equal(np.asarray(row["keypoint_scores"], np.float32).reshape(-1, 308), result.scores)  # fmt: skip
        assert np.array_equal(np.asarray(row["boxes"], np.float32).reshape(-1, 4), result.boxes)
        assert row["members"] == [f"{row['name'].replace('.', '_')}.jpg"]
        assert row["shard"] == "parquet/pose-000007.tar"
    assert set(entries[0]["files"]) == set(containers)


def test_bad_outputs_are_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="unknown --output-format 'csv'"):
        check_out(tmp_path, "csv")
    with pytest.raises(UsageError, match="memory:// store lives in one process"):
        check_out("memory://x", "shards")
    with pytest.raises(UsageError, match="needs --output-format shards or parquet"):
        check_out("s3://bucket/out", "files")
    check_out("file:///tmp/out", "files")  # a local folder
    check_out("s3://bucket/out", "parquet")


def test_local_predict_refuses_a_url_out(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    argv = ["predict", "--task", "seg", "--model", "demo:seg", "--out", "s3://bucket/x",
            "--device", "cpu", str(tmp_path / "a.png")]  # fmt: skip
    assert main(argv) != 0
    assert "URLs are for --engine ray --output-format shards|parquet" in capsys.readouterr().err


def test_resume_state_on_an_object_store_counts_shards_by_size():
    store = _memory_store()
    store.put("shards/seg-000000.tar", b"x" * 10)
    store.put("shards/seg-000001.tar", b"x" * 10)  # its manifest was never written: an orphan
    store.put("shards/seg-000002.tar.77.abcd.partial", b"x")  # a write cut short
    store.put("shards/notes.txt", b"mine")  # not ours: left alone
    items = [{"name": n, "source": f"{n}.png", "key": f"{n}.png", "status": "done",
              "files": {"shards/seg-000000.tar": 10}} for n in ("a", "b")]  # fmt: skip
    body = {"digest": "D", "containers": ["shards/seg-000000.tar"], "items": items}
    store.put(f"{MANIFESTS}/seg-000000.json", json.dumps(body).encode())
    manifests = list(_manifests(store, "D"))
    _drop_orphans(store, manifests)
    assert store.list("shards") == ["shards/notes.txt", "shards/seg-000000.tar"]
    assert sorted(e["name"] for e in load_done(store, "D").values()) == ["a", "b"]
    store.put("shards/seg-000000.tar", b"x" * 9)  # another size: its images are redone
    assert load_done(store, "D") == {}


def test_ray_refusals_come_before_ray_starts(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"")
    base = ["predict", "--task", "seg", "--model", "demo:seg", "--device", "cpu",
            "--engine", "ray"]  # fmt: skip
    cases = [
        (["--out", "s3://b/x", str(tmp_path / "a.png")], "needs --output-format shards or parquet"),
        (["--out", "memory://x", "--output-format", "shards", str(tmp_path / "a.png")],
         "memory:// store lives in one process"),
        (["--out", str(tmp_path / "o"), "--output-format", "shards", "memory://in/a.png"],
         "memory:// inputs live in this process"),
    ]  # fmt: skip
    fsspec.filesystem("memory").pipe("memory://in/a.png", b"")
    for argv, message in cases:
        assert main(base + argv) == 2
        assert message in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(UsageError, match="parquet needs pyarrow"):
        check_out(tmp_path, "parquet")
