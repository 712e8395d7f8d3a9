"""Writes synthetic samples in the project's dataset layout (folders or WebDataset-style tar shards).

Folder layout (per split ``train/`` and ``val/``): ``images/<id>.png``, ``mask/<id>.png``,
``seg/<id>.png``, ``normal/<id>.npy``, ``pointmap/<id>.npy``, ``camera/<id>.json``,
``albedo/<id>.png``, ``alpha/<id>.png`` (uint8 coverage), ``foreground/<id>.png`` (uint8 RGB,
pre-multiplied by alpha) and one COCO-style ``pose.json``. Shard layout: ``<split>-%06d.tar``
files at the dataset root holding, per sample, ``<id>.rgb.png``, ``<id>.mask.png``,
``<id>.seg.png``, ``<id>.normal.npy``, ``<id>.pointmap.npy``, ``<id>.camera.json``,
``<id>.albedo.png``, ``<id>.alpha.png``, ``<id>.foreground.png`` and ``<id>.pose.json`` (that
image's annotation list), consecutively.

Sample ``i`` is rendered from ``SeedSequence([seed, i])`` alone, so the output does not depend
on the number of worker processes, and the same arguments give byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from sapiens2.data.metadata import keypoints308
from sapiens2.data.synth.render import SynthConfig, SynthSample, render_sample

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
MAX_PEOPLE = 99  # annotation ids are image_id * 100 + person + 1
_FOLDER_FILES = {  # shard suffix -> (folder, extension)
    "rgb.png": ("images", ".png"),
    "mask.png": ("mask", ".png"),
    "seg.png": ("seg", ".png"),
    "normal.npy": ("normal", ".npy"),
    "pointmap.npy": ("pointmap", ".npy"),
    "camera.json": ("camera", ".json"),
    "albedo.png": ("albedo", ".png"),
    "alpha.png": ("alpha", ".png"),
    "foreground.png": ("foreground", ".png"),
}


@dataclass(frozen=True)
class WriteConfig:
    """Dataset generation parameters.

    Attributes:
        out: dataset root directory.
        num: total number of images (train + val).
        seed: master seed.
        val_fraction: fraction of the images that go to ``val/`` (the last ones by index).
        shards: write tar shards instead of folders.
        shard_size: samples per shard.
        workers: worker processes (1 = render in this process).
        render: what to render.
    """

    out: Path
    num: int
    seed: int = 0
    val_fraction: float = 0.1
    shards: bool = False
    shard_size: int = 1000
    workers: int = 1
    render: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        if self.num < 1:
            raise ValueError(f"--num must be >= 1, got {self.num}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.render.people_max > MAX_PEOPLE:
            raise ValueError(f"--people-max must be <= {MAX_PEOPLE}, got {self.render.people_max}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")

    def num_val(self) -> int:
        n = round(self.num * self.val_fraction)
        if self.val_fraction > 0 and n == 0 and self.num > 1:
            n = 1
        return n

    def split_of(self, index: int) -> str:
        return "val" if index >= self.num - self.num_val() else "train"


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that renders sample ``index`` of a dataset with master ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def sample_id(index: int) -> str:
    """File stem / shard key of sample ``index`` (zero-padded to 6 digits)."""
    return f"{index:06d}"


def annotations(sample: SynthSample, image_id: int) -> list[dict]:
    """COCO-style annotations (one per person with at least one visible pixel)."""
    out = []
    for p in range(sample.keypoints.shape[0]):
        ys, xs = np.nonzero(sample.instance == p)
        if ys.size == 0:
            continue
        kp = sample.keypoints[p]
        flat = []
        for x, y, v in kp:
            flat += [round(float(x), 3), round(float(y), 3), int(v)]
        x0, y0 = int(xs.min()), int(ys.min())
        out.append(
            {
                "id": image_id * (MAX_PEOPLE + 1) + p + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                "area": int(ys.size),
                "iscrowd": 0,
                "num_keypoints": int(np.count_nonzero(kp[:, 2] > 0)),
                "goliath_wholebody_kpts": flat,
            }
        )
    return out


def _png(rgb_or_gray: np.ndarray) -> bytes:
    img = rgb_or_gray
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _unit_to_u8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 ``rint(255 x)``."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _npy(arr: np.ndarray) -> bytes:
    bio = io.BytesIO()
    np.save(bio, arr, allow_pickle=False)
    return bio.getvalue()


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_sample(sample: SynthSample, image_id: int) -> tuple[dict[str, bytes], list[dict]]:
    """File contents keyed by shard suffix (``rgb.png``...), and the image's annotations."""
    h, w = sample.mask.shape
    anns = annotations(sample, image_id)
    files = {
        "rgb.png": _png(sample.image),
        "mask.png": _png(sample.mask),
        "seg.png": _png(sample.seg),
        "normal.npy": _npy(sample.normal.astype(np.float32)),
        "pointmap.npy": _npy(sample.pointmap.astype(np.float32)),
        "camera.json": _json({"K": sample.K.tolist(), "width": w, "height": h}),
        "albedo.png": _png(sample.albedo),
        "alpha.png": _png(_unit_to_u8(sample.alpha)),
        "foreground.png": _png(_unit_to_u8(sample.foreground)),
        "pose.json": _json(anns),
    }
    return files, anns


def _render_encoded(args: tuple[int, int, SynthConfig]) -> tuple[int, dict[str, bytes], list[dict]]:
    index, seed, cfg = args
    files, anns = encode_sample(render_sample(sample_rng(seed, index), cfg), index)
    return index, files, anns


def _categories() -> list[dict]:
    meta = keypoints308()
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(meta.names),
            "skeleton": meta.skeleton.tolist(),
        }
    ]


class _TarShards:
    """Sequential tar shard writer with deterministic headers."""

    def __init__(self, root: Path, split: str, shard_size: int) -> None:
        self.root, self.split, self.shard_size = root, split, shard_size
        self.count = 0
        self.tar: tarfile.TarFile | None = None
        self.paths: list[Path] = []

    def add(self, key: str, files: dict[str, bytes]) -> None:
        if self.count % self.shard_size == 0:
            self.close()
            path = self.root / f"{self.split}-{len(self.paths):06d}.tar"
            self.paths.append(path)
            self.tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        assert self.tar is not None
        for suffix, data in files.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def write_dataset(cfg: WriteConfig) -> dict:
    """Renders ``cfg.num`` samples and writes them; returns a summary dict (counts, timing)."""
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        clash = list(root.glob(f"{split}-*.tar")) + (
            [root / split / "pose.json"] if (root / split / "pose.json").exists() else []
        )
        if clash:
            raise ValueError(f"{root} already holds a dataset ({clash[0].name}); use a new --out")
    pose = {s: {"images": [], "annotations": [], "categories": _categories()} for s in SPLITS}
    shards = {s: _TarShards(root, s, cfg.shard_size) for s in SPLITS} if cfg.shards else None
    if not cfg.shards:
        for split in SPLITS:
            for folder, _ in _FOLDER_FILES.values():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(i, cfg.seed, cfg.render) for i in range(cfg.num)]
    start = time.perf_counter()
    pool = None
    if cfg.workers > 1:
        pool = multiprocessing.get_context("fork").Pool(cfg.workers)
        results = pool.imap(_render_encoded, jobs, chunksize=4)
    else:
        results = map(_render_encoded, jobs)
    people = 0
    try:
        for index, files, anns in tqdm(results, total=cfg.num, desc="synth", unit="img"):
            split = cfg.split_of(index)
            key = sample_id(index)
            people += len(anns)
            h, w = cfg.render.height, cfg.render.width
            pose[split]["images"].append(
                {"id": index, "file_name": f"images/{key}.png", "width": w, "height": h}
            )
            pose[split]["annotations"].extend(anns)
            if shards is not None:
                shards[split].add(key, files)
            else:
                for suffix, (folder, ext) in _FOLDER_FILES.items():
                    (root / split / folder / f"{key}{ext}").write_bytes(files[suffix])
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if shards is not None:
            for w_ in shards.values():
                w_.close()
    elapsed = time.perf_counter() - start
    if not cfg.shards:
        for split in SPLITS:
            (root / split / "pose.json").write_bytes(_json(pose[split]))
    summary = {
        "num": cfg.num,
        "train": cfg.num - cfg.num_val(),
        "val": cfg.num_val(),
        "people": people,
        "seconds": round(elapsed, 2),
        "samples_per_second": round(cfg.num / max(elapsed, 1e-9), 2),
    }
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    info.pop("workers")
    info.pop("out")  # keep the file identical wherever the dataset is written
    info["shard_files"] = (
        {s: [p.name for p in shards[s].paths] for s in SPLITS} if shards is not None else None
    )
    (root / "synth_info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    log.info("wrote %s: %s", root, summary)
    return summary
