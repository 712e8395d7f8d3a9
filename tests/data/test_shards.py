"""Shards: deterministic writer, index/scan reader, image-only mode; resumable rank/worker loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from sapiens2.data.datasets import ImageDataset
from sapiens2.data.formats import DataError, encode_png
from sapiens2.data.loader import ResumableLoader, ResumableSampler
from sapiens2.data.shards import (
    ShardIndex,
    ShardWriter,
    encode_sample,
    write_folder_shards,
    write_image_shards,
)

from ._dataset_factory import write_dataset


def test_writer_is_deterministic_and_reader_returns_the_bytes(tmp_path):
    rng = np.random.default_rng(0)
    samples = {
        f"k{i}": {
            "rgb.png": encode_png(rng.integers(0, 255, (8, 6, 3), dtype=np.uint8)),
            "cls": str(i).encode(),
        }
        for i in range(7)
    }
    outs = []
    for run in ("a", "b"):
        with ShardWriter(tmp_path / run, "train", samples_per_shard=3) as w:
            for k, files in samples.items():
                w.write(k, files)
        outs.append(w.paths)
    assert [p.name for p in outs[0]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    for a, b in zip(*outs, strict=True):
        assert a.read_bytes() == b.read_bytes()
    idx = ShardIndex(tmp_path / "a", "train")
    assert idx.keys == list(samples)
    for i, k in enumerate(samples):
        assert idx.read(i) == samples[k]
    # without the index file the tars are scanned, with the same result
    (tmp_path / "a" / "train-index.json").unlink()
    scanned = ShardIndex(tmp_path / "a", "train")
    assert [e.members for e in scanned.entries] == [e.members for e in idx.entries]


def test_writer_rejects_bad_keys(tmp_path):
    with ShardWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="invalid"):
            w.write("a.b", {"x": b"1"})
        w.write("a", {"x": b"1"})
        with pytest.raises(ValueError, match="duplicate"):
            w.write("a", {"x": b"1"})


def test_folder_to_shards_round_trip(tmp_path):
    samples = write_dataset(tmp_path / "ds", n=3)
    paths = write_folder_shards(tmp_path / "ds", "train", tmp_path / "sh", samples_per_shard=2)
    assert len(paths) == 2
    idx = ShardIndex(tmp_path / "sh", "train")
    assert idx.keys == ["s000", "s001", "s002"]
    assert set(idx.exts(0)) == {
        "rgb.png",
        "mask.png",
        "seg.png",
        "normal.npy",
        "pointmap.npy",
        "camera.json",
        "albedo.png",
        "pose.json",
    }
    anns = json.loads(idx.read(1, ["pose.json"])["pose.json"])
    assert len(anns) == 2
    np.testing.assert_array_equal(
        np.asarray(anns[1]["goliath_wholebody_kpts"]).reshape(308, 3), samples[1]["keypoints"][1]
    )
    # encode_sample writes the same members
    s = samples[0]
    files = encode_sample(
        s["image"],
        mask=s["mask"],
        seg=s["seg"],
        normal=s["normal"],
        pointmap=s["pointmap"],
        K=s["K"],
        albedo=s["albedo"],
        pose=[],
    )
    assert set(files) == set(idx.exts(0))


def test_bad_shards_are_reported(tmp_path):
    with ShardWriter(tmp_path, "train") as w:
        w.write("a", {"rgb.png": b"garbage"})
    idx = ShardIndex(tmp_path, "train")
    with pytest.raises(DataError, match=r"train-000000\.tar:a\.rgb\.png: not a readable image"):
        idx.read_image(0)
    with pytest.raises(DataError, match=r"train-000000\.tar: sample 'a' has no 'seg.png' member"):
        idx.read(0, ["seg.png"])
    (tmp_path / "x.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(DataError, match=r"x\.tar: not a readable tar"):
        ShardIndex(tmp_path / "x.tar")
    with pytest.raises(DataError, match="no shards"):
        ShardIndex(tmp_path, "val")


def test_image_only_shards_any_size(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    files = []
    for i, (h, w, ext) in enumerate([(10, 7, "png"), (33, 50, "jpg"), (5, 5, "png")]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        p = tmp_path / f"img.{i}.{ext}"
        cv2.imwrite(str(p), img)
        files.append((p, img, ext))
    write_image_shards([f[0] for f in files], tmp_path / "sh", samples_per_shard=2)
    ds = ImageDataset(tmp_path / "sh")
    assert len(ds) == 3
    for i, (_, img, ext) in enumerate(files):
        got = ds[i]["image"]
        assert got.shape == img.shape
        if ext == "png":
            np.testing.assert_array_equal(got[..., ::-1], img)  # written BGR by cv2, read back RGB


# ------------------------------------------------------------------------------------------ loader


class Echo(Dataset):
    """Returns (index, epoch) so the order and the epoch seen by workers can be checked."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, self.epoch])


def flat(batches):
    return [i for b in batches for i in b]


def run(loader, n_batches=None):
    out = []
    for b in loader:
        out.append(b[:, 0].tolist())
        if n_batches is not None and len(out) == n_batches:
            break
    return out


def test_sampler_split_covers_the_epoch_order():
    s = [ResumableSampler(23, seed=5, rank=r, world_size=3) for r in range(3)]
    per_rank = [list(x) for x in s]
    assert all(len(p) == 8 for p in per_rank)  # ceil(23 / 3), padded by wrapping
    order = s[0].global_order().tolist()
    interleaved = [per_rank[i % 3][i // 3] for i in range(24)]
    assert interleaved[:23] == order and interleaved[23] == order[0]
    s[0].set_epoch(1)
    assert s[0].global_order().tolist() != order
    assert sorted(s[0].global_order().tolist()) == list(range(23))


@pytest.mark.parametrize(("workers_before", "workers_after"), [(0, 2), (2, 0)])
def test_resume_mid_epoch_gives_the_same_next_batches(workers_before, workers_after):
    full = run(ResumableLoader(Echo(30), 4, seed=1, num_workers=0))
    assert sorted(flat(full)) == sorted(ResumableSampler(30, seed=1).global_order().tolist()[:28])
    first = ResumableLoader(Echo(30), 4, seed=1, num_workers=workers_before)
    head = run(first, 3)
    state = first.state_dict()
    resumed = ResumableLoader(Echo(30), 4, seed=1, num_workers=workers_after)
    resumed.load_state_dict(state)
    assert head + run(resumed) == full
    # the next epoch follows, with the dataset told about it
    batch = next(iter(resumed))
    assert batch[0, 1] == 1 and batch[:, 0].tolist() == run(_at_epoch(1), 1)[0]


def _at_epoch(e):
    loader = ResumableLoader(Echo(30), 4, seed=1)
    loader.set_epoch(e)
    return loader


def test_resume_per_rank_and_with_a_different_world_size():
    n, bs = 41, 3
    loaders = [
        ResumableLoader(Echo(n), bs, seed=2, rank=r, world_size=2, drop_last=False)
        for r in range(2)
    ]
    full = [
        run(ResumableLoader(Echo(n), bs, seed=2, rank=r, world_size=2, drop_last=False))
        for r in range(2)
    ]
    heads = [run(ld, 4) for ld in loaders]
    states = [ld.state_dict() for ld in loaders]
    assert states[0] == states[1]  # ranks in lockstep share one state
    for r in range(2):
        again = ResumableLoader(
            Echo(n), bs, seed=2, rank=r, world_size=2, drop_last=False, num_workers=r
        )
        again.load_state_dict(states[r])
        assert heads[r] + run(again) == full[r]
    # elastic: resume the same position on one rank; it sees exactly the rest of the epoch order
    single = ResumableLoader(Echo(n), bs, seed=2, drop_last=False)
    single.load_state_dict(states[0])
    rest = flat(run(single))
    order = ResumableSampler(n, seed=2).global_order().tolist()
    assert rest == order[2 * bs * 4 :]
    assert sorted(flat(heads[0] + heads[1]) + rest) == list(range(n))


def test_state_for_another_dataset_is_refused():
    a = ResumableLoader(Echo(10), 2)
    b = ResumableLoader(Echo(11), 2)
    with pytest.raises(ValueError, match="10 samples"):
        b.load_state_dict(a.state_dict())
