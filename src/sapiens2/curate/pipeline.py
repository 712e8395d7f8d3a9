"""The curation pipeline on Ray Data: stages, materialisation, resumption.

Stages and where their output goes (under ``<out>/_work``):

1. ``read``    (Ray, per unit)  list + read + validate + hashes       -> ``read/*.parquet``
2. ``analyse`` (Ray, per image) person filter, quality, embedding      -> ``analyse/*.parquet``
   (one pass, each image decoded once; every row records the sub-stage that dropped it)
3. ``select``  (driver, global) dedup + k-means balancing              -> ``select.parquet``
4. ``write``   (driver)         shards, manifest, drops, report, grids -> ``<out>/``

Each stage writes ``<stage>.done.json`` with a digest of its inputs and config; a rerun skips a
stage whose digest matches and redoes it (and everything after it) otherwise. Per-image stages
stream (Ray Data keeps only a few batches per worker in memory); the global stage holds only ids,
hashes and embeddings. The output depends on the inputs, config and seed only: every global
decision is taken on rows sorted by uid, so the number of workers does not change a byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.cluster import ray_session
from sapiens2.curate.balance import balance, seeded_rank
from sapiens2.curate.config import CurateConfig
from sapiens2.curate.dedup import deduplicate
from sapiens2.curate.quality import QualityCheck
from sapiens2.curate.sources import list_units, local_path
from sapiens2.curate.stages import analyse_batch, read_batch
from sapiens2.outdir import OutputLock, prepare_out_dir

logger = logging.getLogger(__name__)

STAGES = ("read", "analyse", "select", "write")
_SECTIONS = {
    "read": ("read",),
    "analyse": ("person", "quality", "embed"),
    "select": ("dedup", "balance"),
    "write": ("write",),
}


@dataclass
class CurateResult:
    """What a run did: ``ran`` / ``skipped`` stage names, the report dict, output paths."""

    out: Path
    report: dict[str, Any]
    shards: list[Path]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_table(path: Path):
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        return None
    table = pq.read_table(files)
    return table.sort_by("uid") if table.num_rows else table


class Pipeline:
    """One curation run.

    Args:
        source: input folder / tar / glob / URL list (see :func:`sapiens2.curate.sources.list_units`).
        out: output folder (shards, manifest, report; stage outputs under ``_work``).
        config: the run's configuration.
        detector: a picklable :class:`~sapiens2.detect.protocol.Detector` (default: the
            segmentation-based one from ``config.person``).
        extra_checks: learned or custom quality checks added to the built-in ones.
        embedder: a picklable callable ``rgb -> (D,) unit float32`` (default: the backbone from
            ``config.embed``).
        ray_address: a Ray cluster address (``"auto"``) or None for a local Ray with
            ``config.workers`` CPUs.
    """

    def __init__(
        self,
        source: str,
        out: str | Path,
        config: CurateConfig | None = None,
        *,
        detector=None,
        extra_checks: list[QualityCheck] | None = None,
        embedder: Callable[[np.ndarray], np.ndarray] | None = None,
        ray_address: str | None = None,
    ) -> None:
        self.source = str(source)
        self.out = Path(out)
        self.cfg = config or CurateConfig()
        self.detector = detector
        self.extra_checks = extra_checks
        self.embedder = embedder
        self.ray_address = ray_address
        self.work = self.out / "_work"

    # ----------------------------------------------------------------- bookkeeping
    def _marker(self, stage: str) -> Path:
        return self.work / f"{stage}.done.json"

    def _is_done(self, stage: str, digest: str) -> bool:
        m = self._marker(stage)
        if not m.is_file():
            return False
        try:
            return json.loads(m.read_text()).get("digest") == digest
        except json.JSONDecodeError:
            return False

    def _mark(self, stage: str, digest: str, seconds: float) -> None:
        self._marker(stage).write_text(json.dumps({"digest": digest, "seconds": seconds}))

    def _invalidate_from(self, stage: str) -> None:
        for s in STAGES[STAGES.index(stage) :]:
            self._marker(s).unlink(missing_ok=True)

    def _extras_id(self) -> list[str]:
        """Names of plugged-in components (they enter the stage digests)."""
        return [
            type(self.detector).__name__ if self.detector is not None else "",
            ",".join(c.scorer.name for c in self.extra_checks or []),
            type(self.embedder).__name__ if self.embedder is not None else "",
        ]

    # ----------------------------------------------------------------- run
    def run(self) -> CurateResult:
        """Run (or resume) every stage; returns the result with the report.

        Raises:
            OutputError: ``out`` holds an input (or lies in the input folder), cannot be
                written, or another run is using it.
        """
        units = list_units(self.source)
        source = local_path(self.source)
        prepare_out_dir(
            self.out,
            [p for u in units if (p := local_path(u.uri)) is not None],
            input_dirs=[source] if source is not None and source.is_dir() else [],
            flag="curation output",
        )
        with OutputLock(self.out, "curate"):
            return self._run(units)

    def _run(self, units) -> CurateResult:
        self.work.mkdir(parents=True, exist_ok=True)
        listing = _digest([(u.uri, u.kind) for u in units])
        d = self.cfg.to_dict()
        digest, digests = listing, {}
        for s in STAGES:
            digest = _digest(digest, {k: d[k] for k in _SECTIONS[s]}, d["seed"], self._extras_id())
            digests[s] = digest
        result = CurateResult(self.out, {}, [])
        todo = [s for s in STAGES if not self._is_done(s, digests[s])]
        if todo:
            self._invalidate_from(todo[0])
            todo = list(STAGES[STAGES.index(todo[0]) :])
        result.skipped = [s for s in STAGES if s not in todo]
        ray_stages = [s for s in todo if s in ("read", "analyse")]
        if ray_stages:
            # one extra CPU for the parquet reads next to the workers
            with ray_session(self.ray_address, self.cfg.workers + 1, 256 * 1024 * 1024):
                for s in ray_stages:
                    self._timed(s, digests[s], result, lambda s=s: self._ray_stage(s, units))
        if "select" in todo:
            self._timed("select", digests["select"], result, self._select)
        if "write" in todo:
            self._timed("write", digests["write"], result, lambda: self._write(len(units)))
        result.report = json.loads((self.out / "report.json").read_text())
        result.shards = sorted(self.out.glob(f"{self.cfg.write.split}-*.tar"))
        return result

    def _timed(self, stage: str, digest: str, result: CurateResult, fn) -> None:
        t0 = time.perf_counter()
        logger.info("curate: stage %s", stage)
        fn()
        dt = time.perf_counter() - t0
        self._mark(stage, digest, dt)
        result.ran.append(stage)
        result.timings[stage] = dt

    def _ray_stage(self, stage: str, units) -> None:
        import ray

        cfg = self.cfg
        dest = self.work / stage
        shutil.rmtree(dest, ignore_errors=True)
        common = {
            "compute": ray.data.TaskPoolStrategy(size=cfg.workers),
            "num_cpus": 1,
            "batch_format": "numpy",
        }
        if stage == "read":
            items = [{"uri": u.uri, "kind": u.kind} for u in units]
            ds = ray.data.from_items(
                items, override_num_blocks=max(1, min(len(items), 4 * cfg.workers * 8))
            )
            ds = ds.map_batches(read_batch, fn_kwargs={"cfg": cfg}, batch_size=1, **common)
        else:
            import pyarrow.parquet as pq

            parts = sorted((self.work / "read").glob("*.parquet"))
            rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
            # blocks of rows_per_part rows spread over the workers (the reader would merge small
            # files into one block, i.e. one task)
            ds = ray.data.read_parquet(str(self.work / "read"))
            ds = ds.repartition(max(1, -(-rows // cfg.rows_per_part)))
            kwargs = {
                "token": f"{self.out.resolve()}:{time.time_ns()}",
                "cfg": cfg,
                "detector": self.detector,
                "extra_checks": self.extra_checks,
                "embedder": self.embedder,
            }
            ds = ds.map_batches(
                analyse_batch, fn_kwargs=kwargs, batch_size=cfg.batch_size, **common
            )
        ds.write_parquet(
            str(dest), min_rows_per_file=cfg.rows_per_part, max_rows_per_file=cfg.rows_per_part
        )
        if not dest.is_dir():  # nothing survived: keep an empty stage folder
            dest.mkdir(parents=True)

    # ----------------------------------------------------------------- global stage
    def _select(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = _read_table(self.work / "analyse")
        cols: dict[str, list] = {"uid": [], "drop": [], "dup_of": [], "cluster": [], "rank": []}
        if table is not None and table.num_rows:
            table = table.filter(pa.compute.equal(table.column("drop"), ""))
            uids = table.column("uid").to_pylist()
            emb = np.stack(
                [np.frombuffer(b, np.float32) for b in table.column("embedding").to_pylist()]
            )
            dd = deduplicate(
                table.column("sha256").to_pylist(),
                np.asarray(table.column("phash").to_pylist(), np.int64),
                emb,
                self.cfg.dedup,
            )
            drop = list(dd.drop)
            cluster = np.full(len(uids), -1, np.int64)
            alive = np.flatnonzero(np.asarray(drop, dtype=object) == "")
            bal = balance([uids[i] for i in alive], emb[alive], self.cfg.balance, self.cfg.seed)
            cluster[alive] = bal.cluster
            for j, i in enumerate(alive):
                if not bal.keep[j]:
                    drop[i] = "cluster_cap"
            cols = {
                "uid": uids,
                "drop": drop,
                "dup_of": [uids[j] if j >= 0 else "" for j in dd.dup_of],
                "cluster": cluster.tolist(),
                "rank": seeded_rank(uids, self.cfg.seed).tolist(),
            }
            (self.work / "clusters.json").write_text(json.dumps({"sizes": bal.sizes.tolist()}))
        else:
            (self.work / "clusters.json").write_text(json.dumps({"sizes": []}))
        pq.write_table(
            pa.table(
                {
                    "uid": pa.array(cols["uid"], pa.string()),
                    "drop": pa.array(cols["drop"], pa.string()),
                    "dup_of": pa.array(cols["dup_of"], pa.string()),
                    "cluster": pa.array(cols["cluster"], pa.int64()),
                    "rank": pa.array(cols["rank"], pa.int64()),
                }
            ),
            self.work / "select.parquet",
        )

    # ----------------------------------------------------------------- write
    def _write(self, n_units: int) -> None:
        from sapiens2.curate.report import write_outputs

        tables = {s: _read_table(self.work / s) for s in ("read", "analyse")}
        tables["select"] = _read_table(self.work / "select.parquet")
        sizes = json.loads((self.work / "clusters.json").read_text())["sizes"]
        write_outputs(self.out, self.cfg, tables, sizes, n_units, self.source)
        seconds = {}
        for s in STAGES[:-1]:
            m = self._marker(s)
            if m.is_file():
                seconds[s] = json.loads(m.read_text()).get("seconds")
        execution = {k: v for k, v in self.cfg.to_dict().items() if k not in self.cfg.output_dict()}
        analysed = tables["analyse"]
        pids = set(analysed.column("worker_pid").to_pylist()) if analysed is not None else set()
        run = {"execution": execution, "stage_seconds": seconds, "analyse_processes": len(pids)}
        (self.out / "run.json").write_text(json.dumps(run, indent=2) + "\n")


def curate(
    source: str, out: str | Path, config: CurateConfig | None = None, **kwargs
) -> CurateResult:
    """Run the whole pipeline (see :class:`Pipeline` for the arguments)."""
    return Pipeline(source, out, config, **kwargs).run()


__all__ = ["STAGES", "CurateResult", "Pipeline", "curate"]
