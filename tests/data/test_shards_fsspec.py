"""Shards read from anywhere fsspec reaches (memory://, file://), and the wids descriptor fields."""

from __future__ import annotations

import json
import uuid

import pytest
import torch

from sapiens2.data.datasets import SegDataset
from sapiens2.data.formats import DataError
from sapiens2.data.shards import ShardIndex, write_folder_shards

from ._dataset_factory import write_dataset

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def shards(tmp_path):
    write_dataset(tmp_path / "root", n=5)
    out = tmp_path / "shards"
    write_folder_shards(tmp_path / "root", "train", out, samples_per_shard=2)
    return out


def _to_memory(folder, drop_index: bool = False) -> str:
    """Copies a local shard folder into the in-memory file system; returns its URL."""
    fs = fsspec.filesystem("memory")
    url = f"memory://shards-{uuid.uuid4().hex}"
    for p in sorted(folder.iterdir()):
        if drop_index and p.name.endswith("-index.json"):
            continue
        fs.pipe(f"{url}/{p.name}", p.read_bytes())
    return url


def _same(a: ShardIndex, b: ShardIndex) -> None:
    assert a.keys == b.keys and len(a) == 5
    for i in range(len(a)):
        assert a.read(i) == b.read(i)


@pytest.mark.parametrize("drop_index", [False, True], ids=["index", "scanned"])
def test_in_memory_shards_read_like_local_ones(shards, drop_index):
    url = _to_memory(shards, drop_index)
    remote = ShardIndex(url, "train")
    _same(remote, ShardIndex(shards, "train"))
    # messages name the URL (the memory file system writes its root as memory:///)
    folder = url.removeprefix("memory://")
    assert remote.location.startswith("memory://") and remote.location.endswith(folder)
    assert f"{folder}/train-000000.tar:s000.rgb.png" in remote.name(0, "rgb.png")
    # single shard URLs, in the given order
    two = ShardIndex([f"{url}/train-000001.tar", f"{url}/train-000000.tar"])
    assert two.keys == ["s002", "s003", "s000", "s001"]


def test_file_urls_take_the_local_path(shards):
    via_url = ShardIndex(f"file://{shards}", "train")
    assert via_url._store.fs is None  # the pread fast path
    _same(via_url, ShardIndex(shards, "train"))


def test_a_training_dataset_reads_shards_from_a_url(shards):
    local = SegDataset(shards, "train", input_hw=(40, 30))
    remote = SegDataset(_to_memory(shards), "train", input_hw=(40, 30))
    assert len(remote) == len(local) == 5
    for i in range(len(local)):
        a, b = local[i], remote[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["seg"], b["seg"])
    assert "shards from memory://" in remote.source.describe()


def test_missing_and_mixed_sources_are_clear_errors(shards):
    url = _to_memory(shards)
    with pytest.raises(DataError, match="missing shard"):
        ShardIndex(f"{url}/train-000009.tar")
    with pytest.raises(DataError, match=r"no shards matching 'val-\*\.tar'"):
        ShardIndex(url, "val")
    with pytest.raises(DataError, match="mix of local paths and URLs"):
        ShardIndex([shards / "train-000000.tar", f"{url}/train-000001.tar"])


def test_index_is_a_wids_descriptor(shards):
    index = json.loads((shards / "train-index.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and index["wids_version"] == 1
    assert index["name"] == "train"
    listed = [(s["url"], s["nsamples"], s["filesize"]) for s in index["shardlist"]]
    assert listed == [
        (p.name, n, p.stat().st_size)
        for p, n in zip(sorted(shards.glob("train-*.tar")), (2, 2, 1), strict=True)
    ]
    wids = pytest.importorskip("wids")
    ds = wids.ShardListDataset(str(shards / "train-index.json"))
    assert len(ds) == 5
