"""End to end on a planted pool, in Ray local mode (1 and 2 workers), plus resumption and the CLI."""

import dataclasses
import json

import pytest

from sapiens2.curate.config import config_from_dict
from sapiens2.curate.pool import make_pool

ray = pytest.importorskip("ray")
pytest.importorskip("faiss")
pytestmark = pytest.mark.slow  # a Ray local cluster and the demo seg model

CONFIG = {
    "read": {"min_side": 96},
    "person": {"min_box_short_side": 64},
    "embed": {"model": "demo:seg", "pool": "mean", "input_size": [160, 128]},
    "dedup": {"min_similarity": 0.985},
    "balance": {"clusters": 4, "max_per_cluster": 4},
    "write": {"samples_per_shard": 5, "grid_size": 4, "thumb": 32},
    "batch_size": 4,
    "rows_per_part": 8,
}


@pytest.fixture(scope="module")
def ray_local():
    ray.init(
        num_cpus=3, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_pool(
        tmp_path_factory.mktemp("pool"), seed=0, size=(160, 128), humans=14, min_box=64
    )


@pytest.fixture(scope="module")
def run1(ray_local, pool, tmp_path_factory):
    from sapiens2.curate.pipeline import curate

    out = tmp_path_factory.mktemp("out1")
    cfg = config_from_dict({**CONFIG, "workers": 1})
    return curate(str(pool.root), out, cfg, detector=pool.detector)


def _outputs(out):
    names = [p for p in sorted(out.iterdir()) if p.is_file() and p.name != "run.json"]
    names += sorted((out / "grids").glob("*.png"))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in names}


def test_report_counts_match_what_was_planted(run1, pool):
    c, st = pool.counts, run1.report["stages"]
    assert run1.report["images"] == c["files"]
    assert st["read"]["dropped"] == {k: c[k] for k in ("extreme_aspect", "tiny", "unreadable")}
    assert st["person"]["dropped"] == {k: c[k] for k in ("no_person", "small_person")}
    assert st["quality"]["dropped"] == {
        k: c[k] for k in ("high_clipped", "high_text", "low_sharpness")
    }
    assert st["embed"]["dropped"] == {}
    assert st["dedup"]["dropped"] == {
        k: c[k] for k in ("embedding_duplicate", "exact_duplicate", "near_duplicate")
    }
    assert st["dedup"]["out"] == c["kept"]
    sizes, kept = run1.report["clusters"]["sizes"], run1.report["clusters"]["kept"]
    assert sum(sizes) == c["kept"] and kept == [min(n, 4) for n in sizes]
    assert st["balance"]["dropped"].get("cluster_cap", 0) == c["kept"] - sum(kept)
    assert run1.report["output"]["samples"] == sum(kept)
    drops = [json.loads(x) for x in (run1.out / "drops.jsonl").read_text().splitlines()]
    assert len(drops) == c["files"] - sum(kept)
    by_name = {d["source"].rsplit("/", 1)[-1]: d for d in drops}
    assert by_name["broken_truncated.png"]["reason"] == "unreadable"
    # each planted pair is found: one of the two is dropped as a duplicate of the other (the
    # survivor of a group is the first in uid order, e.g. "copy_000.png" before "human_013.png")
    survivors = set()
    for dup, orig, reason in pool.pairs:
        names = {dup, orig}
        found = [n for n in names if n in by_name and by_name[n]["reason"] == reason]
        assert len(found) == 1, (dup, orig)
        survivor = by_name[found[0]]["dup_of"].rsplit("/", 1)[-1]
        assert {found[0], survivor} == names
        survivors.add(survivor)
    assert all(s not in by_name or by_name[s]["reason"] == "cluster_cap" for s in survivors)


def test_shards_are_readable_by_pretraining(run1):
    from sapiens2.data.datasets import ImageDataset
    from sapiens2.data.shards import ShardIndex

    manifest = [json.loads(x) for x in (run1.out / "manifest.jsonl").read_text().splitlines()]
    idx = ShardIndex(run1.out, "train")
    assert idx.keys == [m["key"] for m in manifest]
    assert len(run1.shards) == -(-len(manifest) // 5)
    for i, m in enumerate(manifest):
        img = idx.read_image(i)
        assert img.shape == (m["height"], m["width"], 3)
        meta = json.loads(idx.read(i, ["json"])["json"])
        assert meta["source"] == m["source"] and meta["cluster"] == m["cluster"]
    ds = ImageDataset(run1.out, "train")
    assert len(ds) == len(manifest) and ds[0]["image"].dtype.name == "uint8"
    assert len(list((run1.out / "grids").glob("cluster_*.png"))) == len(
        set(m["cluster"] for m in manifest)
    )
    assert "| dedup |" in (run1.out / "report.md").read_text()


def test_two_workers_give_byte_identical_outputs(run1, pool, tmp_path):
    from sapiens2.curate.pipeline import curate

    cfg = config_from_dict({**CONFIG, "workers": 2})
    run2 = curate(str(pool.root), tmp_path / "out2", cfg, detector=pool.detector)
    a, b = _outputs(run1.out), _outputs(run2.out)
    assert sorted(a) == sorted(b) and any(k.endswith(".tar") for k in a)
    assert [k for k in a if a[k] != b[k]] == []
    # Ray may schedule both concurrent tasks in one worker process when they are short (seen on
    # an idle machine); the run records how many it used, and never more than asked for.
    assert 1 <= json.loads((run2.out / "run.json").read_text())["analyse_processes"] <= 2


def test_rerun_resumes_and_config_changes_redo_only_later_stages(run1, pool):
    from sapiens2.curate.pipeline import curate

    cfg = config_from_dict({**CONFIG, "workers": 1})
    before = _outputs(run1.out)
    again = curate(str(pool.root), run1.out, cfg, detector=pool.detector)
    assert again.ran == [] and again.skipped == ["read", "analyse", "select", "write"]
    assert _outputs(run1.out) == before
    looser = dataclasses.replace(
        cfg, balance=dataclasses.replace(cfg.balance, max_per_cluster=None)
    )
    redo = curate(str(pool.root), run1.out, looser, detector=pool.detector)
    assert redo.ran == ["select", "write"]
    assert redo.report["output"]["samples"] == pool.counts["kept"]
    back = curate(str(pool.root), run1.out, cfg, detector=pool.detector)
    assert back.ran == ["select", "write"] and _outputs(run1.out) == before
