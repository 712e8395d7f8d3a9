"""Torch datasets per task: normalised image tensors plus targets, from a split folder or shards.

``data`` may be a dataset root holding ``<split>/`` folders (docs/formats.md), a directory of
``<split>-%06d.tar`` shards, a single ``.tar`` or a list of them. Every item is a dict of tensors
(and a few plain values); see each class for the keys. Augmentation randomness is drawn from
``numpy.random.default_rng([seed, epoch, index, attempt])``, so an item depends only on those numbers
(not on workers or ranks); call ``set_epoch`` (the :class:`~sapiens2.data.loader.ResumableLoader`
does) to change it per epoch. In training a sample a transform drops (too few valid pixels, ...)
is replaced by another index drawn from the same generator (logged at debug level).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sapiens2.data import transforms as T
from sapiens2.data.formats import (
    IMAGE_SUFFIXES,
    SHARD_EXT,
    TASK_FIELDS,
    DataError,
    DatasetFolder,
    PoseInstance,
    SegClasses,
    decode_fields,
    load_seg_classes,
    parse_pose_annotations,
    read_image,
)
from sapiens2.data.geometry import bbox_xywh_to_xyxy
from sapiens2.data.image import IMAGE_MEAN, IMAGE_STD
from sapiens2.data.shards import ShardIndex, is_url

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "AlbedoDataset",
    "ImageDataset",
    "MattingDataset",
    "NormalDataset",
    "PointmapDataset",
    "PoseDataset",
    "SegDataset",
    "collate",
    "dataset_class",
    "default_transforms",
    "normalize_image",
    "open_source",
    "validate_dataset",
]

logger = logging.getLogger(__name__)

_MEAN = np.array(IMAGE_MEAN, dtype=np.float32)
_STD = np.array(IMAGE_STD, dtype=np.float32)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ``(x - mean) / std`` (0-255 scale, RGB)."""
    x = (image.astype(np.float32) - _MEAN) / _STD  # numpy: no thread-pool contention in workers
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors of equal shape; anything else (or ragged tensors) becomes a list."""
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if (
            all(isinstance(v, torch.Tensor) for v in vals)
            and len({tuple(v.shape) for v in vals}) == 1
        ):
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out


# --------------------------------------------------------------------------------------------------
# Sources


class _FolderSource:
    def __init__(self, folder: DatasetFolder):
        self.folder = folder
        self.seg_classes = folder.seg_classes
        self.ids = folder.ids

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, i: int, fields: Sequence[str]) -> dict[str, Any]:
        return self.folder.read(self.ids[i], fields)

    def describe(self) -> str:
        return str(self.folder.dir)


class _ShardSource:
    def __init__(self, index: ShardIndex, seg_classes: SegClasses):
        self.index = index
        self.seg_classes = seg_classes
        self.ids = index.keys

    def __len__(self) -> int:
        return len(self.index)

    def read(self, i: int, fields: Sequence[str]) -> dict[str, Any]:
        fields = list(dict.fromkeys(["image", *fields]))
        raw = self.index.read(i, [SHARD_EXT[f] for f in fields])
        return decode_fields(
            {f: (raw[SHARD_EXT[f]], self.index.name(i, SHARD_EXT[f])) for f in fields},
            self.seg_classes.num_classes,
        )

    def describe(self) -> str:
        return f"{len(self.index.paths)} shards from {self.index.location}"


def open_source(
    data: str | Path | Sequence[str | Path], split: str
) -> _FolderSource | _ShardSource:
    """Open ``data`` as a split folder (``<data>/<split>/images``) or as shards (see module doc);
    shards may be fsspec URLs (:mod:`sapiens2.data.shards`)."""
    if is_url(data) or (not isinstance(data, str | Path) and data and is_url(data[0])):
        index = ShardIndex(data, split)
        return _ShardSource(index, _remote_seg_classes(index))
    if isinstance(data, str | Path):
        p = Path(data)
        if (p / split / "images").is_dir():
            return _FolderSource(DatasetFolder(p, split))
        if p.is_dir() and not any(p.glob(f"{split}-*.tar")):
            raise DataError(
                f"{p}: neither a dataset root with '{split}/images' nor a folder of '{split}-*.tar' shards"
            )
        classes_file = (p if p.is_dir() else p.parent) / "seg_classes.json"
    else:
        classes_file = Path(data[0]).parent / "seg_classes.json"
    classes = load_seg_classes(classes_file) if classes_file.is_file() else SegClasses.default()
    return _ShardSource(ShardIndex(data, split), classes)


def _remote_seg_classes(index: ShardIndex) -> SegClasses:
    """``seg_classes.json`` next to remote shards, read through a local temporary copy."""
    import tempfile

    store = index._store
    remote = store.sibling(index.paths[0], "seg_classes.json")
    if not store.is_file(remote):
        return SegClasses.default()
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "seg_classes.json"
        local.write_bytes(store.read_bytes(remote))
        return load_seg_classes(local)


# --------------------------------------------------------------------------------------------------
# Default pipelines (the official configs' train/val pipelines, sapiens/pose/configs/keypoints308/
# and sapiens/dense/configs/{seg,normal,pointmap,albedo}/, at any input size)


def default_transforms(
    task: str,
    train: bool,
    input_hw: tuple[int, int] = (1024, 768),
    seg_classes: SegClasses | None = None,
) -> list[T.Transform]:
    """The official train / eval pipeline of ``task`` (without normalisation and target packing):
    its dataset class's :meth:`~_TaskDataset.default_pipeline`.

    Args:
        task: a task with a dataset class (:func:`dataset_class`).
        train: training augmentations, else the deterministic eval pipeline.
        input_hw: network input (H, W).
        seg_classes: class list whose flip pairs the seg flip uses (default 29 classes).
    """
    return dataset_class(task).default_pipeline(train, input_hw, seg_classes)


def _flip(seg_classes: SegClasses | None, p: float) -> T.Transform:
    pairs = (seg_classes or SegClasses.default()).flip_pairs
    return T.HorizontalFlip(p, seg_flip_pairs=pairs)


def _dense_pipeline(
    train: bool,
    input_hw: tuple[int, int],
    seg_classes: SegClasses | None,
    pre: Sequence[T.Transform] = (),
    post: Sequence[T.Transform] = (),
) -> list[T.Transform]:
    """The letterboxed dense pipeline (normal, pointmap, albedo, matting): ``pre`` photometric
    steps, random scale / crop / flip, letterbox, ``post`` noise steps; eval: the letterbox."""
    if not train:
        return [T.Letterbox(input_hw)]
    geo = [
        T.RandomScale(p=0.3),
        T.RandomCropContinuous(p=0.3),
        _flip(seg_classes, 0.3),
        T.Letterbox(input_hw),
    ]
    return [*pre, *geo, *post]


# --------------------------------------------------------------------------------------------------
# Datasets


class _TaskDataset(Dataset):
    """A task's dataset. Subclasses set ``task`` (the name their task module uses), ``fields``
    (what a sample holds, :data:`~sapiens2.data.formats.TASK_FIELDS`) and their
    :meth:`default_pipeline`."""

    task = ""
    folder_check = True  # check the folder's label files up front (pose reads pose.json)

    @classmethod
    def default_pipeline(
        cls, train: bool, input_hw: tuple[int, int], seg_classes: SegClasses | None = None
    ) -> list[T.Transform]:
        """The official train / eval pipeline (without normalisation and target packing)."""
        raise NotImplementedError

    def __init__(
        self,
        data: str | Path | Sequence[str | Path],
        split: str = "train",
        *,
        train: bool | None = None,
        input_hw: tuple[int, int] = (1024, 768),
        transforms: Sequence[T.Transform] | None = None,
        seed: int = 0,
        max_retries: int = 10,
    ):
        self.source = open_source(data, split)
        self.split = split
        self.train = (split == "train") if train is None else train
        self.input_hw = tuple(input_hw)
        self.seed = seed
        self.epoch = 0
        self.max_retries = max_retries
        if transforms is None:
            transforms = self.default_pipeline(self.train, self.input_hw, self.source.seg_classes)
        self.pipeline = T.Compose(transforms)
        if isinstance(self.source, _FolderSource) and self.folder_check:
            self.source.folder.check(self.task)
        if len(self) == 0:
            raise DataError(f"{self.source.describe()}: no samples for task {self.task!r}")

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load(self, index: int) -> T.Sample:
        """The raw, validated sample ``index`` (before transforms)."""
        raise NotImplementedError

    def pack(self, sample: T.Sample) -> dict[str, Any] | None:
        """Tensors for the model and loss; ``None`` drops the sample (training only)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        for attempt in range(self.max_retries + 1):
            rng = np.random.default_rng([self.seed, self.epoch, int(index), attempt])
            sample = self.pipeline(self.load(i), rng)
            item = self.pack(sample) if sample is not None else None
            if item is not None:
                item["index"] = i
                return item
            if not self.train:
                raise DataError(
                    f"{self.source.describe()}: eval sample {self.source.ids[i]!r} is unusable"
                )
            logger.debug("dropped sample %s (attempt %d)", self.source.ids[i], attempt)
            i = int(rng.integers(len(self)))
        raise DataError(
            f"{self.source.describe()}: no usable sample after {self.max_retries} replacements"
        )

    def _fields(self, index: int) -> dict[str, Any]:
        return self.source.read(index, TASK_FIELDS[self.task])


class SegDataset(_TaskDataset):
    """Body-part segmentation. Items: ``image`` (3, H, W) float32, ``seg`` (h, w) int64 (255 ignore),
    ``key``. In training samples whose foreground (labels not 0/255) covers < 1% are dropped."""

    task = "seg"

    @classmethod
    def default_pipeline(cls, train, input_hw, seg_classes=None):
        if not train:
            return [T.Resize(input_hw, labels=False)]
        return [
            T.RandomScale(p=1.0, scale_range=(0.4, 2.0), base_hw=input_hw),
            T.RandomCrop(input_hw, p=0.3, cat_max_ratio=0.75),
            T.RandomGaussianBlur(p=0.3),
            T.RandomGaussianNoise(p=0.3),
            T.RandomRotate(p=0.5, max_deg=60),
            _flip(seg_classes, 0.5),
            T.PhotoMetricDistortion(p=1.0),
            T.Resize(input_hw),
        ]

    def load(self, index: int) -> T.Sample:
        f = self._fields(index)
        return T.Sample(image=f["image"], seg=f["seg"], key=self.source.ids[index])

    def pack(self, s: T.Sample) -> dict[str, Any] | None:
        assert s.seg is not None
        fg = ((s.seg != 0) & (s.seg != 255)).mean()
        if self.train and fg < 0.01:
            return None
        return {
            "image": normalize_image(s.image),
            "seg": torch.from_numpy(s.seg.astype(np.int64)),
            "key": s.key,
        }


def _valid_coverage_ok(valid: np.ndarray) -> bool:
    return valid.sum() >= 16 and valid.mean() <= 0.96


class NormalDataset(_TaskDataset):
    """Surface normals. Items: ``image``, ``normal`` (3, H, W) unit vectors (0 where invalid),
    ``mask`` (H, W) bool, ``key``. Training drops samples with < 16 valid pixels or > 96% coverage."""

    task = "normal"

    @classmethod
    def default_pipeline(cls, train, input_hw, seg_classes=None):
        pre = [T.PhotoMetricDistortion(p=1.0), T.RandomDownUpSample(p=0.2)]
        post = [T.RandomGaussianBlur(p=0.3), T.RandomGaussianNoise(p=0.3), T.RandomSolarize(p=0.3)]
        return _dense_pipeline(train, input_hw, seg_classes, pre, post)

    def load(self, index: int) -> T.Sample:
        f = self._fields(index)
        return T.Sample(
            image=f["image"], mask=f["mask"], normal=f["normal"], key=self.source.ids[index]
        )

    def pack(self, s: T.Sample) -> dict[str, Any] | None:
        assert s.normal is not None and s.mask is not None
        sq = np.einsum("hwc,hwc->hw", s.normal, s.normal)
        valid = (s.mask > 0) & (sq > 1e-12)
        if self.train and not _valid_coverage_ok(valid):
            return None
        inv = np.where(valid, 1.0 / np.sqrt(np.maximum(sq, 1e-12)), 0).astype(np.float32)
        n = s.normal * inv[..., None]
        return {
            "image": normalize_image(s.image),
            "normal": torch.from_numpy(n).permute(2, 0, 1).contiguous(),
            "mask": torch.from_numpy(valid),
            "key": s.key,
        }


class PointmapDataset(_TaskDataset):
    """Pointmaps. Items: ``image``, ``pointmap`` (3, H, W) canonical = metric · s with
    ``s = canonical_focal_length / fx`` (0 outside the mask), ``scale`` (1,) = s, ``K`` (3, 3) of the
    network input, ``mask`` (H, W) bool, ``key``. Training drops samples with < 16 valid pixels,
    > 96% coverage or a minimum canonical depth < 0.04 (official ``PointmapPackInputs``,
    ``sapiens/dense/src/datasets/transforms/pointmap_transforms.py``)."""

    task = "pointmap"

    @classmethod
    def default_pipeline(cls, train, input_hw, seg_classes=None):
        return _dense_pipeline(train, input_hw, seg_classes, [T.PhotoMetricDistortion(p=1.0)])

    def __init__(self, *args: Any, canonical_focal_length: float = 768.0, **kwargs: Any):
        self.canonical_focal_length = canonical_focal_length
        super().__init__(*args, **kwargs)

    def load(self, index: int) -> T.Sample:
        f = self._fields(index)
        return T.Sample(
            image=f["image"],
            mask=f["mask"],
            pointmap=f["pointmap"],
            K=f["camera"].K,
            key=self.source.ids[index],
        )

    def pack(self, s: T.Sample) -> dict[str, Any] | None:
        assert s.pointmap is not None and s.mask is not None and s.K is not None
        valid = (s.mask > 0) & (s.pointmap[..., 2] > 0)
        scale = self.canonical_focal_length / float(s.K[0, 0])
        canon = np.where(valid[..., None], s.pointmap * scale, 0).astype(np.float32)
        if self.train and (not _valid_coverage_ok(valid) or canon[..., 2][valid].min() < 0.04):
            return None
        return {
            "image": normalize_image(s.image),
            "pointmap": torch.from_numpy(canon).permute(2, 0, 1).contiguous(),
            "scale": torch.tensor([scale], dtype=torch.float32),
            "K": torch.from_numpy(np.asarray(s.K, dtype=np.float32)),
            "mask": torch.from_numpy(valid),
            "key": s.key,
        }


class AlbedoDataset(_TaskDataset):
    """Albedo. Items: ``image``, ``albedo`` (3, H, W) float32 in [0, 1], ``mask`` (H, W) bool, ``key``.
    Training drops samples with < 16 valid pixels or > 96% coverage."""

    task = "albedo"

    @classmethod
    def default_pipeline(cls, train, input_hw, seg_classes=None):
        return _dense_pipeline(train, input_hw, seg_classes, (), [T.RandomGaussianNoise(p=0.2)])

    def load(self, index: int) -> T.Sample:
        f = self._fields(index)
        return T.Sample(
            image=f["image"], mask=f["mask"], albedo=f["albedo"], key=self.source.ids[index]
        )

    def pack(self, s: T.Sample) -> dict[str, Any] | None:
        assert s.albedo is not None and s.mask is not None
        valid = s.mask > 0
        if self.train and not _valid_coverage_ok(valid):
            return None
        return {
            "image": normalize_image(s.image),
            "albedo": torch.from_numpy(s.albedo.astype(np.float32) / 255.0)
            .permute(2, 0, 1)
            .contiguous(),
            "mask": torch.from_numpy(valid),
            "key": s.key,
        }


class MattingDataset(_TaskDataset):
    """Matting. Items: ``image``, ``alpha`` (1, H, W) float32 in [0, 1], ``foreground``
    (3, H, W) float32 in [0, 1], the person colour pre-multiplied by alpha (what the matting head
    predicts), ``key``. No sample is dropped: a crop without a person is a valid all-zero matte.
    The pipeline is the albedo one (letterbox; in training random scale, crop, flip and noise),
    our choice as there is no official matting recipe; letterbox padding has alpha 0."""

    task = "matting"

    @classmethod
    def default_pipeline(cls, train, input_hw, seg_classes=None):
        # our choice, no official recipe: the albedo pipeline
        return _dense_pipeline(train, input_hw, seg_classes, (), [T.RandomGaussianNoise(p=0.2)])

    def load(self, index: int) -> T.Sample:
        f = self._fields(index)
        return T.Sample(
            image=f["image"],
            alpha=f["alpha"],
            foreground=f["foreground"],
            key=self.source.ids[index],
        )

    def pack(self, s: T.Sample) -> dict[str, Any] | None:
        assert s.alpha is not None and s.foreground is not None
        alpha = s.alpha.astype(np.float32) / 255.0
        fg = s.foreground.astype(np.float32) / 255.0
        return {
            "image": normalize_image(s.image),
            "alpha": torch.from_numpy(alpha)[None],
            "foreground": torch.from_numpy(fg).permute(2, 0, 1).contiguous(),
            "key": s.key,
        }


class PoseDataset(_TaskDataset):
    """Top-down 308-keypoint pose: one item per annotated person (crowd and unlabelled ones skipped).

    Items: ``image`` (3, H, W); ``heatmaps`` (K, H/4, W/4) and ``keypoint_weights`` (K,) UDP targets
    (official ``UDPHeatmap``, ``sapiens/pose/src/datasets/codecs/udp_heatmap.py``); ``keypoints`` (K, 2) in crop pixels and ``keypoints_visible`` (K,); ``center``,
    ``scale`` (2,) of the crop (after the aspect fix); ``bbox`` (4,) xyxy and ``gt_keypoints``
    (K, 3) (x, y, v) in image pixels (before augmentation, for evaluation); ``image_id``, ``ann_id``,
    ``key``.

    Args:
        heatmap_hw: default input / 4; sigma: Gaussian sigma (6).
        out_of_range: ``"error"`` or ``"drop"`` for labelled keypoints outside the image.
    """

    task = "pose"
    folder_check = False

    @classmethod
    def default_pipeline(cls, train, input_hw, seg_classes=None):
        if not train:
            return [T.TopdownBoxFromBBox(1.25), T.TopdownAffine(input_hw)]
        return [
            T.TopdownBoxFromBBox(1.25),
            _flip(seg_classes, 0.5),
            T.RandomHalfBody(p=0.3),
            T.RandomBBoxTransform(),
            T.TopdownAffine(input_hw),
            T.PhotoMetricDistortion(p=0.8),
            T.RandomBoxBlur(p=0.1),
            T.RandomMedianBlur(p=0.1),
            T.RandomCoarseDropout(p=1.0, holes=1, size_range=(0.2, 0.4)),
        ]

    def __init__(
        self,
        *args: Any,
        heatmap_hw: tuple[int, int] | None = None,
        sigma: float = 6.0,
        out_of_range: str = "error",
        **kwargs: Any,
    ):
        self.heatmap_hw = heatmap_hw
        self.sigma = sigma
        self.out_of_range = out_of_range
        self.instances: list[
            tuple[int, PoseInstance, str]
        ] = []  # (source index, instance, image path)
        super().__init__(*args, **kwargs)
        self.encoder = T.GenerateUDPHeatmaps(self.input_hw, heatmap_hw, sigma)

    def _index_instances(self) -> None:
        src = self.source
        if isinstance(src, _FolderSource):
            folder = src.folder
            by_stem = {i: n for n, i in enumerate(src.ids)}
            for im in folder.pose_images(self.out_of_range):
                stem = Path(im.file_name).stem
                if stem not in by_stem:
                    raise DataError(
                        f"{folder.dir / 'pose.json'}: image {im.file_name} is not in {folder.dir / 'images'}"
                    )
                for inst in im.instances:
                    if inst.iscrowd or not (inst.keypoints[:, 2] > 0).any():
                        continue
                    self.instances.append((by_stem[stem], inst, im.file_name))
        else:
            index = src.index
            for i in range(len(index)):
                if SHARD_EXT["pose"] not in index.exts(i):
                    continue
                name = index.name(i, SHARD_EXT["pose"])
                try:
                    anns = json.loads(index.read(i, [SHARD_EXT["pose"]])[SHARD_EXT["pose"]])
                except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
                    raise DataError(f"{name}: not valid JSON ({e})") from e
                # the image size is checked when the sample is loaded
                for inst in parse_pose_annotations(anns, 1 << 30, 1 << 30, name):
                    if inst.iscrowd or not (inst.keypoints[:, 2] > 0).any():
                        continue
                    self.instances.append((i, inst, name))

    def __len__(self) -> int:
        if not self.instances:
            self._index_instances()
        return len(self.instances)

    def load(self, index: int) -> T.Sample:
        src_i, inst, name = self.instances[index]
        image = self.source.read(src_i, [])["image"]
        h, w = image.shape[:2]
        kp = inst.keypoints
        labelled = kp[:, 2] > 0
        outside = labelled & ((kp[:, 0] < 0) | (kp[:, 0] > w) | (kp[:, 1] < 0) | (kp[:, 1] > h))
        if outside.any():
            if self.out_of_range == "error":
                raise DataError(
                    f"{name}: annotation id={inst.ann_id} has labelled keypoints outside the {w}x{h} image"
                )
            kp = kp.copy()
            kp[outside] = 0
            labelled = kp[:, 2] > 0
        # the box clipped to the image, as the official COCO-style readers do
        bbox = bbox_xywh_to_xyxy(inst.bbox_xywh)
        bbox[[0, 2]] = np.clip(bbox[[0, 2]], 0, w - 1)
        bbox[[1, 3]] = np.clip(bbox[[1, 3]], 0, h - 1)
        if bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
            raise DataError(
                f"{name}: annotation id={inst.ann_id} has an empty box inside the {w}x{h} image"
            )
        return T.Sample(
            image=image,
            keypoints=kp[:, :2].astype(np.float64),
            keypoints_visible=labelled.astype(np.float32),
            bbox=bbox,
            key=self.source.ids[src_i],
            meta={
                "image_id": inst.image_id,
                "ann_id": inst.ann_id,
                "gt_keypoints": kp,
                "orig_bbox": bbox,
            },
        )

    def pack(self, s: T.Sample) -> dict[str, Any] | None:
        s = self.encoder(s)
        assert s.heatmaps is not None and s.keypoint_weights is not None and s.keypoints is not None
        return {
            "image": normalize_image(s.image),
            "heatmaps": torch.from_numpy(s.heatmaps),
            "keypoint_weights": torch.from_numpy(s.keypoint_weights),
            "keypoints": torch.from_numpy(np.asarray(s.keypoints, dtype=np.float32)),
            "keypoints_visible": torch.from_numpy(
                np.asarray(s.keypoints_visible, dtype=np.float32)
            ),
            "center": torch.from_numpy(np.asarray(s.center, dtype=np.float32)),
            "scale": torch.from_numpy(np.asarray(s.scale, dtype=np.float32)),
            "bbox": torch.from_numpy(np.asarray(s.meta["orig_bbox"], dtype=np.float32)),
            "gt_keypoints": torch.from_numpy(np.asarray(s.meta["gt_keypoints"], dtype=np.float32)),
            "image_id": s.meta["image_id"],
            "ann_id": s.meta["ann_id"],
            "key": s.key,
        }


class ImageDataset(Dataset):
    """Image-only mode (pretraining): images of any size from shards or a folder of images.

    Items: ``{"image": (H, W, 3) uint8 RGB numpy array, "key": str, "index": int}`` — no resizing;
    crops are up to the caller (e.g. a pretraining multi-crop ``transform`` given here, called as
    ``transform(image, rng)`` with ``rng = default_rng([seed, epoch, index])``).
    """

    def __init__(
        self,
        data: str | Path | Sequence[str | Path],
        split: str = "train",
        *,
        transform: Any = None,
        seed: int = 0,
    ):
        self.paths: list[Path] | None = None
        self.index: ShardIndex | None = None
        p = Path(data) if isinstance(data, str | Path) else None
        if p is not None and p.is_dir():
            if any(p.glob(f"{split}-*.tar")):
                self.index = ShardIndex(p, split)
            elif any(p.glob("*.tar")):
                self.index = ShardIndex(p)
            else:
                folder = p / split / "images" if (p / split / "images").is_dir() else p
                self.paths = sorted(
                    f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
                )
                if not self.paths:
                    raise DataError(f"{folder}: no images")
        else:
            self.index = ShardIndex(data)
        self.transform, self.seed, self.epoch = transform, seed, 0

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.index)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.paths is not None:
            image, key = read_image(self.paths[index]), self.paths[index].stem
        else:
            assert self.index is not None
            image, key = self.index.read_image(index), self.index.entries[index].key
        item: dict[str, Any] = {"image": image, "key": key, "index": int(index)}
        if self.transform is not None:
            item["image"] = self.transform(
                image, np.random.default_rng([self.seed, self.epoch, int(index)])
            )
        return item


def _dataset_classes() -> dict[str, type[_TaskDataset]]:
    """Every task dataset class by its ``task`` (the subclasses of :class:`_TaskDataset`)."""
    out: dict[str, type[_TaskDataset]] = {}
    todo = list(_TaskDataset.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if cls.task:
            out.setdefault(cls.task, cls)
    return out


def dataset_class(task: str) -> type[_TaskDataset]:
    """The dataset class of ``task`` (the one whose ``task`` attribute it is)."""
    classes = _dataset_classes()
    if task not in classes:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(classes)}")
    return classes[task]


def validate_dataset(
    data: str | Path | Sequence[str | Path], split: str, task: str, max_errors: int = 20
) -> tuple[int, list[str]]:
    """Read and check every sample ``task`` would use (no augmentation); collect the problems.

    Returns:
        ``(num_checked, errors)``: the number of samples (pose: people) read and up to
        ``max_errors`` messages, each naming the file and the problem. An unusable dataset (missing
        folder, broken pose file) gives one error and 0 samples.
    """
    try:
        ds = dataset_class(task)(data, split, train=False, transforms=[])
    except DataError as e:
        return 0, [str(e)]
    errors: list[str] = []
    n = 0
    for i in range(len(ds)):
        n += 1
        try:
            ds.load(i)
        except DataError as e:
            errors.append(str(e))
            if len(errors) >= max_errors:
                break
    return n, errors
