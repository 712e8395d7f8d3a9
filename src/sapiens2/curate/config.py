"""Typed configuration of the curation pipeline, loadable from a JSON or TOML file.

Every stage has its own frozen dataclass; :class:`CurateConfig` groups them. A config file holds the
same nesting (``{"person": {"min_box_short_side": 256}, "seed": 3}``); keys it does not name keep
their defaults, unknown keys are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sapiens2.overrides import from_dict

#: settings that change how fast a run goes, never what it writes
EXECUTION_KEYS = ("workers", "batch_size", "torch_threads", "device", "rows_per_part")


@dataclass(frozen=True)
class ReadConfig:
    """Read and validate.

    Attributes:
        min_side: drop images whose short side is below this many pixels ("tiny").
        max_aspect: drop images whose long/short side ratio exceeds this ("extreme_aspect").
        max_bytes: drop files larger than this many bytes ("too_large"), before decoding.
        max_pixels: drop images whose header declares more pixels than this
            ("too_many_pixels"), before decoding (``None``: no limit; docs/security.md).
    """

    min_side: int = 384
    max_aspect: float = 3.0
    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int | None = 100_000_000


@dataclass(frozen=True)
class PersonConfig:
    """Person filter: keep images with at least one person box of short side >= ``min_box_short_side``.

    Attributes:
        min_box_short_side: short side (pixels, in the original image) a person box must reach.
        seg_model: checkpoint of the built-in segmentation-based detector (a path, a hub id, or
            ``"demo:seg"`` for the bundled demo model that knows synthetic humans only).
        input_size: (H, W) the segmentation model runs at.
        min_component_fraction: connected mask components smaller than this fraction of the
            largest one are ignored (detached fingers, noise).
    """

    min_box_short_side: int = 384
    seg_model: str = "facebook/sapiens2-seg-0.4b"
    input_size: tuple[int, int] = (1024, 768)
    min_component_fraction: float = 0.05


@dataclass(frozen=True)
class QualityConfig:
    """Built-in quality heuristics; a bound of ``None`` disables that check.

    Attributes:
        min_sharpness: minimum variance of the Laplacian (grey image resized to 256 px short side).
        max_clipped: maximum fraction of pixels that are near-black (<= 4) or near-white (>= 251).
        min_brightness / max_brightness: bounds on the mean grey level (0-255).
        max_text: maximum fraction of image rows that look like overlaid text.
    """

    min_sharpness: float | None = 60.0
    max_clipped: float | None = 0.5
    min_brightness: float | None = 25.0
    max_brightness: float | None = 235.0
    max_text: float | None = 0.1


@dataclass(frozen=True)
class EmbedConfig:
    """Backbone embeddings for deduplication and balancing.

    Attributes:
        model: a Sapiens2 backbone or task checkpoint (its backbone is used); ``"demo:seg"`` for the
            bundled demo model's backbone.
        pool: ``"cls"`` (class token) or ``"mean"`` (mean of the patch tokens).
        input_size: (H, W) images are resized to (a multiple of 16).
    """

    model: str = "facebook/sapiens2-pretrain-0.4b"
    pool: str = "cls"
    input_size: tuple[int, int] = (512, 384)


@dataclass(frozen=True)
class DedupConfig:
    """Deduplication.

    Attributes:
        phash_max_distance: two images whose 64-bit perceptual hashes differ in at most this many
            bits are near-exact duplicates.
        min_similarity: two images whose L2-normalised embeddings have a cosine similarity of at
            least this are duplicates (None: no embedding pruning).
        index: FAISS ``index_factory`` string for the embedding search (``"Flat"`` is exact; e.g.
            ``"IVF4096,Flat"`` at scale).
        nprobe: inverted lists visited per query for IVF indexes.
    """

    phash_max_distance: int = 4
    min_similarity: float | None = 0.95
    index: str = "Flat"
    nprobe: int = 16


@dataclass(frozen=True)
class BalanceConfig:
    """DINOv2-style balancing: k-means on embeddings, then at most ``max_per_cluster`` per cluster.

    Attributes:
        clusters: number of k-means clusters (capped at the number of images).
        max_per_cluster: cap per cluster (None: no cap, clustering only for the report).
        iterations: k-means iterations.
        restarts: k-means runs from different seeded starts; the lowest-error one is kept.
    """

    clusters: int = 100
    max_per_cluster: int | None = None
    iterations: int = 20
    restarts: int = 3


@dataclass(frozen=True)
class WriteConfig:
    """Output shards.

    Attributes:
        split: shard name prefix (``<split>-%06d.tar``).
        samples_per_shard: images per shard.
        grid_size: thumbnails per cluster picture in the report (0: no pictures).
        thumb: thumbnail side in pixels.
    """

    split: str = "train"
    samples_per_shard: int = 1000
    grid_size: int = 16
    thumb: int = 96


@dataclass(frozen=True)
class CurateConfig:
    """The whole pipeline.

    Attributes:
        seed: seeds k-means, the within-cluster sampling and the output order.
        workers: parallel workers per map stage (Ray tasks/actors).
        batch_size: images per worker batch.
        torch_threads: intra-op threads per worker (1 keeps embeddings bit-identical everywhere).
        device: where models run in the workers (``"cpu"``, ``"cuda"``).
        rows_per_part: rows per materialised stage file; a file is also the unit of work the
            per-image stage hands to one worker.
    """

    read: ReadConfig = field(default_factory=ReadConfig)
    person: PersonConfig = field(default_factory=PersonConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    seed: int = 0
    workers: int = 1
    batch_size: int = 16
    torch_threads: int = 1
    device: str = "cpu"
    rows_per_part: int = 4096

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def output_dict(self) -> dict[str, Any]:
        """The settings that can change the output (execution settings left out)."""
        d = self.to_dict()
        for k in EXECUTION_KEYS:
            d.pop(k)
        return d

    def stage_hash(self, *sections: str) -> str:
        """A short digest of the named sections (and the seed): a stage's cache key."""
        d = self.to_dict()
        blob = json.dumps({s: d[s] for s in (*sections, "seed")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check(c: CurateConfig) -> None:
    errors = []
    if c.read.min_side < 1:
        errors.append(f"read.min_side must be >= 1, got {c.read.min_side}")
    if c.read.max_aspect < 1:
        errors.append(f"read.max_aspect must be >= 1, got {c.read.max_aspect}")
    if c.person.min_box_short_side < 0:
        errors.append(f"person.min_box_short_side must be >= 0, got {c.person.min_box_short_side}")
    for name, size in (
        ("person.input_size", c.person.input_size),
        ("embed.input_size", c.embed.input_size),
    ):
        if len(size) != 2 or size[0] % 16 or size[1] % 16 or min(size) < 16:
            errors.append(f"{name} must be two positive multiples of 16, got {size}")
    if c.embed.pool not in ("cls", "mean"):
        errors.append(f"embed.pool must be 'cls' or 'mean', got {c.embed.pool!r}")
    if not 0 <= c.dedup.phash_max_distance <= 64:
        errors.append(
            f"dedup.phash_max_distance must be in 0..64, got {c.dedup.phash_max_distance}"
        )
    sim = c.dedup.min_similarity
    if sim is not None and not -1 <= sim <= 1:
        errors.append(f"dedup.min_similarity must be in [-1, 1], got {sim}")
    if c.balance.clusters < 1:
        errors.append(f"balance.clusters must be >= 1, got {c.balance.clusters}")
    if c.balance.iterations < 1 or c.balance.restarts < 1:
        errors.append("balance.iterations and balance.restarts must be >= 1")
    if c.balance.max_per_cluster is not None and c.balance.max_per_cluster < 1:
        errors.append(f"balance.max_per_cluster must be >= 1, got {c.balance.max_per_cluster}")
    if c.write.samples_per_shard < 1:
        errors.append(f"write.samples_per_shard must be >= 1, got {c.write.samples_per_shard}")
    for name in ("workers", "batch_size", "torch_threads", "rows_per_part"):
        if getattr(c, name) < 1:
            errors.append(f"{name} must be >= 1, got {getattr(c, name)}")
    if errors:
        raise ValueError("invalid curation config: " + "; ".join(errors))


def config_from_dict(data: dict[str, Any]) -> CurateConfig:
    """Build a :class:`CurateConfig` from nested dicts (unknown keys and wrong types are errors)."""
    return from_dict(CurateConfig, data)


def load_config(path: str | Path | None) -> CurateConfig:
    """Read a ``.json`` or ``.toml`` config file; ``None`` gives the defaults."""
    if path is None:
        return CurateConfig()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    if p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: not valid TOML: {e}") from e
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON: {e}") from e
    else:
        raise ValueError(f"{p}: config must be a .json or .toml file")
    try:
        return config_from_dict(data)
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from e
