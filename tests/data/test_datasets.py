"""Task datasets: same items from folders and shards, consistent targets, deterministic resumable loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sapiens2.data import geometry
from sapiens2.data.datasets import (
    IMAGE_MEAN,
    IMAGE_STD,
    AlbedoDataset,
    NormalDataset,
    PointmapDataset,
    PoseDataset,
    SegDataset,
    collate,
)
from sapiens2.data.formats import DataError, encode_png
from sapiens2.data.loader import ResumableLoader
from sapiens2.data.shards import write_folder_shards

from ._dataset_factory import write_dataset

IN_HW = (64, 48)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_dataset(root, n=4, h=40, w=30)
    shards = root / "shards"
    write_folder_shards(root, "train", shards, samples_per_shard=3)
    return root, shards


CLASSES = [SegDataset, NormalDataset, PointmapDataset, AlbedoDataset, PoseDataset]


def _equal_items(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_folder_and_shards_give_identical_items(data, cls):
    root, shards = data
    kw = {"input_hw": IN_HW, "seed": 3, "train": True}
    if cls is PoseDataset:
        kw["sigma"] = 1.0
    a, b = cls(root, **kw), cls(shards, **kw)
    assert len(a) == len(b) == (6 if cls is PoseDataset else 4)
    for i in range(len(a)):
        _equal_items(a[i], b[i])
    item = a[0]
    assert item["image"].shape == (3, *IN_HW) and item["image"].dtype == torch.float32
    # same index, same epoch -> same augmentation; another epoch -> another one
    _equal_items(a[1], a[1])
    a.set_epoch(1)
    assert not torch.equal(a[1]["image"], b[1]["image"])


def test_pose_targets_follow_the_crop(data):
    root, _ = data
    ds = PoseDataset(root, train=False, input_hw=IN_HW, sigma=1.0)
    hm_hw = (16, 12)
    for i in range(len(ds)):
        it = ds[i]
        assert it["heatmaps"].shape == (308, *hm_hw)
        gt = it["gt_keypoints"].numpy()
        m = geometry.udp_warp_matrix(it["center"].numpy(), it["scale"].numpy(), 0.0, IN_HW)
        crop = geometry.transform_points(gt[:, :2], m)
        w = it["keypoint_weights"].numpy()
        assert w.sum() >= 15 and set(np.flatnonzero(w)) <= set(np.flatnonzero(gt[:, 2] > 0))
        np.testing.assert_allclose(it["keypoints"].numpy()[w > 0], crop[w > 0], atol=1e-3)
        factor = np.array([(IN_HW[1] - 1) / (hm_hw[1] - 1), (IN_HW[0] - 1) / (hm_hw[0] - 1)])
        kp_hm = crop / factor
        # (box-edge keypoints fall exactly half-way between heatmap pixels: a tie, skip those)
        clear = (w > 0) & (np.abs(kp_hm - np.floor(kp_hm) - 0.5) > 1e-3).all(axis=1)
        assert clear.sum() >= 10
        for k in np.flatnonzero(clear):
            y, x = np.unravel_index(it["heatmaps"][k].argmax().item(), hm_hw)
            np.testing.assert_array_equal([x, y], np.floor(kp_hm[k] + 0.5))
        # the crop is the UDP warp of the image
        assert it["scale"][0] / it["scale"][1] == pytest.approx(0.75)


def test_pointmap_items_reproject_with_their_intrinsics(data):
    root, _ = data
    ds = PointmapDataset(root, train=True, input_hw=IN_HW, seed=0)
    for i in range(len(ds)):
        it = ds[i]
        K = it["K"].numpy().astype(np.float64)
        pm = it["pointmap"].permute(1, 2, 0).numpy() / it["scale"].item()  # metric
        assert it["scale"].item() == pytest.approx(768.0 / K[0, 0], rel=1e-6)
        valid = it["mask"].numpy()
        vv, uu = np.nonzero(valid)
        p = pm[valid]
        u = K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]
        v = K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]
        # nearest resampling: within half an output pixel per unit of upscaling (max x3 here)
        assert np.abs(u - uu).max() < 2.0 and np.abs(v - vv).max() < 2.0
        assert np.abs(u - uu).mean() < 0.5


def test_normal_and_albedo_items(data):
    root, _ = data
    n = NormalDataset(root, train=False, input_hw=IN_HW)[0]
    valid = n["mask"]
    lengths = n["normal"].norm(dim=0)
    torch.testing.assert_close(lengths[valid], torch.ones(int(valid.sum())), atol=1e-5, rtol=0)
    assert (n["normal"][:, ~valid] == 0).all()
    a = AlbedoDataset(root, train=False, input_hw=IN_HW)[0]
    assert a["albedo"].min() >= 0 and a["albedo"].max() <= 1
    img = a["image"] * torch.tensor(IMAGE_STD).view(3, 1, 1) + torch.tensor(IMAGE_MEAN).view(
        3, 1, 1
    )
    assert img.min() > -0.01 and img.max() < 255.01


def test_seg_eval_keeps_full_resolution_labels(data):
    root, _ = data
    ds = SegDataset(root, train=False, input_hw=IN_HW)
    it = ds[0]
    assert it["image"].shape == (3, *IN_HW) and it["seg"].shape == (40, 30)
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, *IN_HW) and batch["seg"].shape == (2, 40, 30)


def test_seg_train_replaces_empty_samples(tmp_path):
    write_dataset(tmp_path, n=3)
    (tmp_path / "train" / "seg" / "s001.png").write_bytes(encode_png(np.zeros((40, 30), np.uint8)))
    ds = SegDataset(tmp_path, input_hw=IN_HW, transforms=[])
    it = ds[1]
    assert it["index"] != 1 and ((it["seg"] != 0) & (it["seg"] != 255)).float().mean() >= 0.01
    ev = SegDataset(tmp_path, train=False, input_hw=IN_HW)
    assert ev[1]["index"] == 1  # evaluation keeps every sample


def test_bad_data_in_shards_is_reported(tmp_path):
    write_dataset(tmp_path / "ds", n=2)
    (tmp_path / "ds" / "train" / "seg" / "s001.png").write_bytes(
        encode_png(np.zeros((10, 30), np.uint8))
    )
    write_folder_shards(tmp_path / "ds", "train", tmp_path / "sh")
    ds = SegDataset(tmp_path / "sh", input_hw=IN_HW)
    with pytest.raises(DataError, match=r"train-000000\.tar:s001\.seg\.png: label image is 10x30"):
        ds[1]
    with pytest.raises(DataError, match=r"seg/s001\.png: label image is 10x30"):
        SegDataset(tmp_path / "ds", input_hw=IN_HW)[1]


def test_missing_folder_is_reported(tmp_path):
    write_dataset(tmp_path, n=2)
    import shutil

    shutil.rmtree(tmp_path / "train" / "albedo")
    with pytest.raises(DataError, match=r"albedo: missing folder"):
        AlbedoDataset(tmp_path)
    with pytest.raises(DataError, match="neither a dataset root"):
        SegDataset(tmp_path / "train")


def test_shard_pose_loader_resumes_across_workers(data):
    _, shards = data
    ds = PoseDataset(shards, input_hw=IN_HW, sigma=1.0, seed=0)

    def keys(loader, n=None):
        out = []
        for b in loader:
            out.append((b["ann_id"], b["heatmaps"].sum().item()))
            if n is not None and len(out) == n:
                break
        return out

    full = keys(ResumableLoader(ds, 2, seed=4, collate_fn=collate))
    first = ResumableLoader(ds, 2, seed=4, collate_fn=collate)
    head = keys(first, 1)
    again = ResumableLoader(ds, 2, seed=4, collate_fn=collate, num_workers=2)
    again.load_state_dict(first.state_dict())
    assert head + keys(again) == full
