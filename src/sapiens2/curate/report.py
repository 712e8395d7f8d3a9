"""Stage 6, write: the curated shards, a manifest, the drop log, a report and per-cluster pictures.

Outputs in ``<out>``:

- ``<split>-%06d.tar`` + ``<split>-index.json``: image-only WebDataset shards
  (:class:`sapiens2.data.shards.ShardWriter`), one sample per image: the original encoded bytes under
  their own extension (``jpg``, ``png``...) and a ``json`` member ``{"source", "width", "height",
  "cluster"}``. Samples are in the seeded pseudo-random order of their uids; keys are ``%09d``.
- ``manifest.jsonl``: one line per written sample (key, shard, source, sha256, size, cluster).
- ``drops.jsonl``: one line per dropped image (source, stage, reason, and ``dup_of`` for duplicates).
- ``report.json`` / ``report.md``: counts in and out of every stage, drop reasons, cluster sizes.
- ``run.json`` (written by the pipeline): workers and other execution settings, seconds per stage,
  how many worker processes the analyse pass used; the only output that depends on ``workers``.
- ``grids/cluster_%04d.png``: thumbnails of kept images of each cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sapiens2.curate.config import CurateConfig
from sapiens2.curate.sources import read_item
from sapiens2.data.formats import decode_image
from sapiens2.data.shards import ShardWriter

PER_IMAGE_STAGES = ("read", "person", "quality", "embed")  # the last three from the analyse pass


def _rows(table) -> list[dict[str, Any]]:
    if table is None:
        return []
    keep = [c for c in table.column_names if c not in ("embedding", "worker_pid")]
    return table.select(keep).to_pylist()


def _stage_counts(rows: list[dict[str, Any]], entering: int | None = None) -> dict[str, Any]:
    dropped: dict[str, int] = {}
    for r in rows:
        if r["drop"]:
            dropped[r["drop"]] = dropped.get(r["drop"], 0) + 1
    n = len(rows) if entering is None else entering
    return {
        "in": n,
        "out": len(rows) - sum(dropped.values()),
        "dropped": dict(sorted(dropped.items())),
    }


def thumbnail(rgb: np.ndarray, side: int) -> np.ndarray:
    """Letterbox an RGB image into a ``side`` x ``side`` white square, (side, side, 3) uint8."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.full((side, side, 3), 255, np.uint8)
    y, x = (side - nh) // 2, (side - nw) // 2
    out[y : y + nh, x : x + nw] = small
    return out


def tile(thumbs: list[np.ndarray], cols: int = 4, gap: int = 2) -> np.ndarray:
    """Tile equal-size thumbnails row-major into one (H, W, 3) picture."""
    side = thumbs[0].shape[0]
    rows = (len(thumbs) + cols - 1) // cols
    sheet = np.full((rows * (side + gap) - gap, cols * (side + gap) - gap, 3), 255, np.uint8)
    for i, t in enumerate(thumbs):
        r, c = divmod(i, cols)
        sheet[
            r * (side + gap) : r * (side + gap) + side, c * (side + gap) : c * (side + gap) + side
        ] = t
    return sheet


def _ext(row: dict[str, Any]) -> str:
    name = row["member"] or row["uri"]
    return Path(name.split("?", 1)[0]).suffix.lower().lstrip(".")


def write_outputs(
    out: Path,
    cfg: CurateConfig,
    tables: dict[str, Any],
    cluster_sizes: list[int],
    n_units: int,
    source: str,
) -> None:
    """Write shards, manifest, drop log, report and grids from the materialised stage tables."""
    w = cfg.write
    for old in [*out.glob(f"{w.split}-*.tar"), out / f"{w.split}-index.json"]:
        old.unlink(missing_ok=True)
    grids = out / "grids"
    if grids.is_dir():
        for old in grids.glob("cluster_*.png"):
            old.unlink()

    analysed = _rows(tables["analyse"])
    rows = {"read": _rows(tables["read"])}
    entering = analysed
    for s in ("person", "quality", "embed"):
        rows[s] = [{**r, "drop": r["drop"] if r["drop_stage"] == s else ""} for r in entering]
        entering = [r for r in entering if r["drop_stage"] != s]
    select = _rows(tables["select"])
    info = {r["uid"]: r for r in analysed if not r["drop"]}
    kept = sorted((r for r in select if not r["drop"]), key=lambda r: r["rank"])

    manifest, thumbs = [], {}
    writer = ShardWriter(out, w.split, w.samples_per_shard)
    with writer:
        for i, sel in enumerate(kept):
            r = info[sel["uid"]]
            data = read_item(r["uri"], r["member"], r["offset"], r["size"])
            key = f"{i:09d}"
            meta = {
                "source": r["uid"],
                "width": r["width"],
                "height": r["height"],
                "cluster": sel["cluster"],
            }
            writer.write(key, {_ext(r): data, "json": json.dumps(meta, sort_keys=True).encode()})
            manifest.append(
                {
                    "key": key,
                    "shard": f"{w.split}-{i // w.samples_per_shard:06d}.tar",
                    "source": r["uid"],
                    "sha256": r["sha256"],
                    "width": r["width"],
                    "height": r["height"],
                    "cluster": sel["cluster"],
                }
            )
            group = thumbs.setdefault(sel["cluster"], [])
            if len(group) < w.grid_size:
                rgb = decode_image(data, r["uid"], max_pixels=cfg.read.max_pixels)
                group.append(thumbnail(rgb, w.thumb))
    (out / "manifest.jsonl").write_text(
        "".join(json.dumps(m, sort_keys=True) + "\n" for m in manifest)
    )

    drops = []
    for s in PER_IMAGE_STAGES:
        drops += [
            {"source": r["uid"], "stage": s, "reason": r["drop"]} for r in rows[s] if r["drop"]
        ]
    for r in select:
        if r["drop"]:
            d = {
                "source": r["uid"],
                "stage": "dedup" if r["dup_of"] else "balance",
                "reason": r["drop"],
            }
            if r["dup_of"]:
                d["dup_of"] = r["dup_of"]
            drops.append(d)
    drops.sort(key=lambda d: d["source"])
    (out / "drops.jsonl").write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in drops))

    dedup_rows = [{**r, "drop": "" if r["drop"] == "cluster_cap" else r["drop"]} for r in select]
    stages = {s: _stage_counts(rows[s]) for s in PER_IMAGE_STAGES}
    stages["dedup"] = _stage_counts(dedup_rows)
    stages["balance"] = _stage_counts(
        [r for r in select if not r["drop"] or r["drop"] == "cluster_cap"]
    )
    kept_per_cluster = [0] * len(cluster_sizes)
    for sel in kept:
        kept_per_cluster[sel["cluster"]] += 1
    report = {
        "source": source,
        "units": n_units,
        "images": stages["read"]["in"],
        "stages": stages,
        "clusters": {"sizes": list(cluster_sizes), "kept": kept_per_cluster},
        "output": {"samples": len(kept), "shards": len(writer.paths)},
        "config": cfg.output_dict(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    if w.grid_size > 0 and thumbs:
        grids.mkdir(exist_ok=True)
        for c, group in sorted(thumbs.items()):
            cv2.imwrite(
                str(grids / f"cluster_{c:04d}.png"), cv2.cvtColor(tile(group), cv2.COLOR_RGB2BGR)
            )
    (out / "report.md").write_text(_markdown(report, sorted(thumbs)))


def _markdown(report: dict[str, Any], clusters: list[int]) -> str:
    lines = [
        "# Curation report",
        "",
        f"Source `{report['source']}`: {report['units']} units, {report['images']} images; "
        f"{report['output']['samples']} written in {report['output']['shards']} shard(s).",
        "",
        "| stage | in | out | dropped (reason: count) |",
        "| --- | ---: | ---: | --- |",
    ]
    for s, c in report["stages"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in c["dropped"].items()) or "-"
        lines.append(f"| {s} | {c['in']} | {c['out']} | {reasons} |")
    sizes, kept = report["clusters"]["sizes"], report["clusters"]["kept"]
    lines += [
        "",
        "## Clusters",
        "",
        "| cluster | images | kept | sample grid |",
        "| ---: | ---: | ---: | --- |",
    ]
    for c, (n, k) in enumerate(zip(sizes, kept, strict=True)):
        pic = f"![cluster {c}](grids/cluster_{c:04d}.png)" if c in clusters else "-"
        lines.append(f"| {c} | {n} | {k} | {pic} |")
    return "\n".join(lines) + "\n"
