"""Matting data: alpha and foreground files in folders and shards, their checks, and the
matting dataset's items (from synthetic data, whose image is the composite of its labels)."""

from __future__ import annotations

import tarfile

import cv2
import numpy as np
import pytest
import torch

from sapiens2.data import transforms as T
from sapiens2.data.datasets import (
    IMAGE_MEAN,
    IMAGE_STD,
    MattingDataset,
    collate,
    validate_dataset,
)
from sapiens2.data.formats import (
    DataError,
    DatasetFolder,
    decode_alpha,
    decode_fields,
    decode_foreground,
    encode_png,
)
from sapiens2.data.shards import ShardWriter, encode_sample, write_folder_shards
from sapiens2.data.synth.render import SynthConfig, render_sample
from sapiens2.data.synth.writer import WriteConfig, sample_rng, write_dataset
from sapiens2.metrics import MattingMetric
from sapiens2.train.losses import MattingLoss

H, W = 48, 40
RENDER = SynthConfig(H, W, people_max=2, noise=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("matting")
    write_dataset(WriteConfig(root / "folder", num=4, seed=5, val_fraction=0.0, render=RENDER))
    write_dataset(WriteConfig(root / "shards", 4, 5, 0.0, shards=True, shard_size=3, render=RENDER))
    return root / "folder", root / "shards"


def _unnormalise(image: torch.Tensor) -> np.ndarray:
    mean, std = np.array(IMAGE_MEAN), np.array(IMAGE_STD)
    return image.permute(1, 2, 0).double().numpy() * std + mean


def test_items_are_the_files_and_composite_to_the_image(data):
    folder, shards = data
    a = MattingDataset(folder, train=False, input_hw=(H, W))
    b = MattingDataset(shards, train=False, input_hw=(H, W))
    assert len(a) == len(b) == 4
    for i in range(4):
        item, other = a[i], b[i]
        for k in ("image", "alpha", "foreground"):
            assert torch.equal(item[k], other[k]), k
        assert item["alpha"].shape == (1, H, W) and item["foreground"].shape == (3, H, W)
        assert item["alpha"].dtype == item["foreground"].dtype == torch.float32
        s = render_sample(sample_rng(5, i), RENDER)
        alpha, fg = item["alpha"][0].double().numpy(), item["foreground"].double().numpy()
        assert np.array_equal(np.rint(alpha * 255), np.rint(s.alpha * 255.0))
        # The image is the composite of the stored labels over the background (noise 0): within
        # the rounding of the image, of the foreground and of the alpha (0.5 each, x255 for alpha).
        composite = 255 * fg.transpose(1, 2, 0) + (1 - alpha[..., None]) * s.background
        assert np.abs(composite - _unnormalise(item["image"])).max() <= 1.5 + 1e-3
        assert ((alpha > 0) & (alpha < 1)).any()


def test_training_items_keep_the_foreground_pre_multiplied(data):
    folder, _ = data
    ds = MattingDataset(folder, train=True, input_hw=(64, 48), seed=1)
    for i in range(4):
        item = ds[i]
        alpha, fg = item["alpha"], item["foreground"]
        assert item["image"].shape == (3, 64, 48) and alpha.shape == (1, 64, 48)
        assert alpha.min() >= 0 and alpha.max() <= 1
        # geometric transforms interpolate both with the same weights: still fg <= alpha
        assert (fg <= alpha + 2 / 255).all()
    # A collated batch is what the matting loss and metric read.
    batch = collate([ds[0], ds[1]])
    target = torch.cat([batch["foreground"], batch["alpha"]], 1)
    assert MattingLoss()(target, batch)["loss"].item() == 0
    metric = MattingMetric()
    metric.update(target[:, 3:], batch["alpha"])
    assert metric.compute()["sad"] == 0 and metric.compute()["num_samples"] == 2
    flipped = MattingDataset(folder, train=False, input_hw=(H, W), transforms=[T.HorizontalFlip(1)])
    plain = MattingDataset(folder, train=False, input_hw=(H, W), transforms=[])
    assert torch.equal(flipped[0]["alpha"], plain[0]["alpha"].flip(-1))
    assert torch.equal(flipped[0]["foreground"], plain[0]["foreground"].flip(-1))
    boxed = MattingDataset(folder, train=False, input_hw=(H, 2 * W))[0]  # letterbox pads the sides
    assert (boxed["alpha"][..., : W // 2] == 0).all() and (boxed["foreground"][..., -4:] == 0).all()


def test_alpha_and_foreground_checks(data, tmp_path):
    folder, _ = data
    assert validate_dataset(folder, "train", "matting") == (4, [])
    DatasetFolder(folder, "train").check("matting")
    alpha = np.array([[0, 128], [255, 10]], np.uint8)
    grey_rgb = encode_png(np.repeat(alpha[..., None], 3, 2))
    assert np.array_equal(decode_alpha(grey_rgb, "a.png"), alpha)
    with pytest.raises(DataError, match="single-channel"):
        decode_alpha(encode_png(np.dstack([alpha, alpha, alpha // 2])), "a.png")
    with pytest.raises(DataError, match="8-bit"):
        decode_alpha(cv2.imencode(".png", alpha.astype(np.uint16) * 257)[1].tobytes(), "a.png")
    with pytest.raises(DataError, match="alpha matte is 2x2"):
        decode_alpha(encode_png(alpha), "a.png", hw=(3, 2))
    straight = np.full((2, 2, 3), 200, np.uint8)
    with pytest.raises(DataError, match="3 pixels are brighter than their alpha"):
        decode_foreground(encode_png(straight), "f.png", alpha=alpha)
    image = encode_png(np.zeros((2, 2, 3), np.uint8))
    raw = {"image": (image, "i.png"), "alpha": (encode_png(alpha), "a.png")}
    raw["foreground"] = (encode_png(straight), "f.png")
    with pytest.raises(DataError, match="pre-multiplied"):
        decode_fields(raw)
    # A straight-colour foreground in a dataset is named by check-data.
    bad = tmp_path / "bad"
    write_dataset(WriteConfig(bad, num=1, seed=5, val_fraction=0.0, render=RENDER))
    (bad / "train" / "foreground" / "000000.png").write_bytes(
        encode_png(np.full((H, W, 3), 255, np.uint8))
    )
    n, errors = validate_dataset(bad, "train", "matting")
    assert n == 1 and len(errors) == 1 and "foreground/000000.png" in errors[0]
    (bad / "train" / "alpha" / "000000.png").unlink()
    with pytest.raises(DataError, match="missing alpha files for task 'matting'"):
        DatasetFolder(bad, "train").check("matting")


def test_shard_writers_carry_alpha_and_foreground(data, tmp_path):
    folder, _ = data
    write_folder_shards(folder, "train", tmp_path / "packed", samples_per_shard=10)
    with tarfile.open(tmp_path / "packed" / "train-000000.tar") as tar:
        names = tar.getnames()
        assert "000002.alpha.png" in names and "000002.foreground.png" in names
        assert (
            tar.extractfile("000002.alpha.png").read()
            == (folder / "train" / "alpha" / "000002.png").read_bytes()
        )
    ds = MattingDataset(tmp_path / "packed", train=False, input_hw=(H, W))
    assert torch.equal(
        ds[2]["alpha"], MattingDataset(folder, train=False, input_hw=(H, W))[2]["alpha"]
    )
    alpha = np.zeros((H, W), np.uint8)
    fg = np.zeros((H, W, 3), np.uint8)
    members = encode_sample(np.zeros((H, W, 3), np.uint8), alpha=alpha, foreground=fg)
    assert list(members) == ["rgb.png", "alpha.png", "foreground.png"]
    with ShardWriter(tmp_path / "own", "train") as w:
        w.write("k0", members)
    assert MattingDataset(tmp_path / "own", train=False, input_hw=(H, W))[0]["alpha"].sum() == 0
