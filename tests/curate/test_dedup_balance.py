import numpy as np
import pytest

from sapiens2.curate.balance import balance, seeded_rank
from sapiens2.curate.config import BalanceConfig, DedupConfig
from sapiens2.curate.dedup import deduplicate

pytest.importorskip("faiss")


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_exact_then_phash_then_embedding_greedy_in_order():
    sha = ["a", "b", "a", "c", "d", "e"]
    base = 0x0F0F_0F0F_0F0F_0F0F
    ph = np.array([base, base ^ 0b111, base, base ^ 0xFF00, 7, -8], np.int64)  # 1: 3 bits from 0
    emb = _unit([[1, 0, 0], [0.9, 0.1, 0], [1, 0, 0], [0, 1, 0], [0, 0.96, 0.28], [0, 0.8, 0.6]])
    r = deduplicate(sha, ph, emb, DedupConfig(phash_max_distance=3, min_similarity=0.95))
    assert list(r.drop) == ["", "near_duplicate", "exact_duplicate", "", "embedding_duplicate", ""]
    assert list(r.dup_of) == [-1, 0, 0, -1, 3, -1]
    # item 5: cosine 0.8 with 3 and 0.936 with 4, both below 0.95, so it stays
    r = deduplicate(sha, ph, emb, DedupConfig(phash_max_distance=2, min_similarity=None))
    assert list(r.drop) == ["", "", "exact_duplicate", "", "", ""]


def test_phash_radius_is_inclusive():
    ph = np.array([0, 0b1111], np.int64)
    assert (
        deduplicate(["x", "y"], ph, None, DedupConfig(phash_max_distance=4)).drop[1]
        == "near_duplicate"
    )
    assert deduplicate(["x", "y"], ph, None, DedupConfig(phash_max_distance=3)).drop[1] == ""


def test_embedding_similarity_threshold_and_ivf_index():
    rng = np.random.default_rng(0)
    emb = _unit(rng.normal(size=(300, 16)))
    twin = _unit(emb[:20] + 0.05 * rng.normal(size=(20, 16)))
    allv = np.concatenate([emb, twin])
    sims = np.sum(allv[:20] * twin, axis=1)
    sha = [str(i) for i in range(len(allv))]
    ph = np.arange(len(allv), dtype=np.int64) * 0x0101010101  # all far apart in Hamming distance
    cfg = DedupConfig(phash_max_distance=0, min_similarity=float(sims.min()) - 1e-4)
    flat = deduplicate(sha, ph, allv, cfg)
    assert sorted(np.flatnonzero(flat.drop == "embedding_duplicate")) == list(range(300, 320))
    assert list(flat.dup_of[300:]) == list(range(20))
    ivf = deduplicate(sha, ph, allv, DedupConfig(0, cfg.min_similarity, "IVF4,Flat", nprobe=4))
    assert list(ivf.drop) == list(flat.drop)


def test_balance_recovers_clusters_and_caps_them_deterministically():
    rng = np.random.default_rng(1)
    centres = _unit(np.eye(4, 8) + 0.01)
    sizes = [30, 10, 5, 2]
    emb = _unit(
        np.concatenate(
            [c + 0.05 * rng.normal(size=(n, 8)) for c, n in zip(centres, sizes, strict=True)]
        )
    )
    uids = [f"img{i:03d}" for i in range(len(emb))]
    cfg = BalanceConfig(clusters=4, max_per_cluster=6, iterations=10)
    r = balance(uids, emb, cfg, seed=0)
    truth = np.repeat(np.arange(4), sizes)
    for t in range(4):  # each true group is one cluster
        assert len(set(r.cluster[truth == t])) == 1
    assert sorted(r.sizes.tolist()) == sorted(sizes)
    assert sorted(np.bincount(r.cluster[r.keep], minlength=4).tolist()) == [2, 5, 6, 6]
    again = balance(uids, emb, cfg, seed=0)
    assert np.array_equal(again.keep, r.keep) and np.array_equal(again.cluster, r.cluster)
    other = balance(uids, emb, cfg, seed=5)
    assert not np.array_equal(other.keep, r.keep)  # another seed samples other members
    # the sample within a capped cluster follows the seeded uid order, not the input order
    perm = rng.permutation(len(uids))
    shuffled = balance([uids[i] for i in perm], emb[perm], cfg, seed=0)
    kept = {uids[i] for i in perm[shuffled.keep]}
    assert kept == {u for u, k in zip(uids, r.keep, strict=True) if k}


def test_seeded_rank_is_a_permutation():
    r = seeded_rank(["a", "b", "c", "d"], 3)
    assert sorted(r.tolist()) == [0, 1, 2, 3]
    assert r.tolist() == seeded_rank(["a", "b", "c", "d"], 3).tolist()
