"""The per-image stages as batch functions (Ray Data ``map_batches`` UDFs).

Each UDF takes a batch of rows (dict of numpy columns), handles only the rows still kept (``drop``
== ""), passes every column through and adds its own; rows it drops get their reason in ``drop``.
Models and scorers are built once per worker (callable classes = Ray actors).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from sapiens2.curate.config import CurateConfig
from sapiens2.curate.person import person_verdict
from sapiens2.curate.quality import QualityCheck, builtin_checks, score_image
from sapiens2.curate.sources import Unit, iter_unit, read_item
from sapiens2.curate.validate import validate_item
from sapiens2.data.formats import DataError, decode_image

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]

READ_COLUMNS = (
    "uid",
    "uri",
    "member",
    "offset",
    "size",
    "drop",
    "width",
    "height",
    "sha256",
    "phash",
)


def _kept(batch: Batch) -> np.ndarray:
    return np.asarray([d == "" for d in batch["drop"]], bool)


def _decode_row(batch: Batch, i: int, max_pixels: int | None) -> np.ndarray | None:
    try:
        data = read_item(
            str(batch["uri"][i]),
            str(batch["member"][i]),
            int(batch["offset"][i]),
            int(batch["size"][i]),
        )
        return decode_image(data, str(batch["uid"][i]), max_pixels=max_pixels)
    except (OSError, DataError) as e:
        logger.warning("%s: cannot re-read: %s", batch["uid"][i], e)
        return None


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


class ReadStage:
    """Units (``uri``, ``kind``) -> one row per image with stage-1 verdicts and hashes."""

    def __init__(self, cfg: CurateConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch: Batch) -> Batch:
        rows: dict[str, list[Any]] = {c: [] for c in READ_COLUMNS}
        for uri, kind in zip(batch["uri"], batch["kind"], strict=True):
            for item in iter_unit(Unit(str(uri), str(kind)), self.cfg.read.max_bytes):
                v, _ = validate_item(item, self.cfg.read)
                for c, val in (
                    ("uid", item.uid),
                    ("uri", item.uri),
                    ("member", item.member),
                    ("offset", item.offset),
                    ("size", item.size),
                    ("drop", v.drop),
                    ("width", v.width),
                    ("height", v.height),
                    ("sha256", v.sha256),
                    ("phash", v.phash),
                ):
                    rows[c].append(val)
        out = {c: np.asarray(v, dtype=object) for c, v in rows.items()}
        for c in ("offset", "size", "width", "height", "phash"):
            out[c] = np.asarray(rows[c], dtype=np.int64)
        return out


class AnalyseStage:
    """Stages 2-4 on each image decoded once: person filter, quality checks, embedding.

    Adds ``drop_stage`` ("person" / "quality" / "embed" for dropped rows), ``people``,
    ``max_person_side``, one ``q_<name>`` column per quality check, ``embedding`` (float32 bytes
    of a unit vector; b"" for dropped rows) and ``worker_pid`` (run statistics only).
    """

    def __init__(
        self, cfg: CurateConfig, detector, extra_checks: list[QualityCheck] | None, embedder
    ) -> None:
        _set_threads(cfg.torch_threads)
        if detector is None:
            from sapiens2.curate.person import SegmentationDetector

            p = cfg.person
            detector = SegmentationDetector(
                p.seg_model, p.input_size, cfg.device, p.min_component_fraction
            )
        if embedder is None:
            from sapiens2.curate.embed import BackboneEmbedder

            e = cfg.embed
            embedder = BackboneEmbedder(e.model, e.pool, e.input_size, cfg.device)
        self.detector, self.embedder = detector, embedder
        self.min_side = cfg.person.min_box_short_side
        self.max_pixels = cfg.read.max_pixels
        self.checks = builtin_checks(cfg.quality) + list(extra_checks or [])
        names = [c.scorer.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"quality scorer names must be unique, got {names}")

    def __call__(self, batch: Batch) -> Batch:
        batch = {k: v[_kept(batch)] for k, v in batch.items()}
        n = len(batch["uid"])
        drop = np.asarray(batch["drop"], dtype=object).copy()
        stage = np.full(n, "", dtype=object)
        people = np.zeros(n, np.int64)
        side = np.zeros(n, np.float64)
        scores = {c.scorer.name: np.full(n, np.nan) for c in self.checks}
        emb = np.full(n, b"", dtype=object)
        for i in range(n):
            rgb = _decode_row(batch, i, self.max_pixels)
            if rgb is None:
                drop[i], stage[i] = "reread_error", "person"
                continue
            v = person_verdict(self.detector, rgb, self.min_side)
            people[i], side[i] = v.people, v.max_short_side
            if v.drop:
                drop[i], stage[i] = v.drop, "person"
                continue
            s, reason = score_image(rgb, self.checks)
            for k, val in s.items():
                scores[k][i] = val
            if reason:
                drop[i], stage[i] = reason, "quality"
                continue
            emb[i] = np.asarray(self.embedder(rgb), np.float32).tobytes()
        return {
            **batch,
            "drop": drop,
            "drop_stage": stage,
            "people": people,
            "max_person_side": side,
            **{f"q_{k}": v for k, v in scores.items()},
            "embedding": emb,
            "worker_pid": np.full(n, os.getpid(), np.int64),
        }


_ANALYSERS: dict[str, AnalyseStage] = {}


def read_batch(batch: Batch, cfg: CurateConfig) -> Batch:
    """Ray task form of :class:`ReadStage`."""
    return ReadStage(cfg)(batch)


def analyse_batch(
    batch: Batch, token: str, cfg: CurateConfig, detector, extra_checks, embedder
) -> Batch:
    """Ray task form of :class:`AnalyseStage`; the analyser (models) is built once per worker
    process and run ``token`` and reused by later tasks in the same process."""
    analyser = _ANALYSERS.get(token)
    if analyser is None:
        _ANALYSERS.clear()
        analyser = _ANALYSERS[token] = AnalyseStage(cfg, detector, extra_checks, embedder)
    return analyser(batch)
