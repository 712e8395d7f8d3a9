"""Stage 5, balancing (DINOv2-style curation): k-means on the embeddings, then a cap per cluster.

Clusters come from FAISS k-means (seeded, one thread, so reproducible). Within a cluster over its
cap, the images kept are the first ``max_per_cluster`` in a seeded pseudo-random order of their uids,
which is a uniform sample that does not depend on the order images arrived in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from sapiens2.curate.config import BalanceConfig
from sapiens2.curate.dedup import faiss_threads


def seeded_rank(uids: list[str], seed: int) -> np.ndarray:
    """(N,) int64 rank of each uid in the seeded pseudo-random order (SHA-256 of ``seed:uid``)."""
    keys = [hashlib.sha256(f"{seed}:{u}".encode()).digest()[:8] for u in uids]
    order = sorted(range(len(uids)), key=lambda i: (keys[i], uids[i]))
    rank = np.empty(len(uids), np.int64)
    rank[order] = np.arange(len(uids))
    return rank


@dataclass(frozen=True)
class BalanceResult:
    """``cluster`` (N,) int64 ids, ``keep`` (N,) bool, ``sizes`` (K,) images per cluster before caps."""

    cluster: np.ndarray
    keep: np.ndarray
    sizes: np.ndarray


def balance(
    uids: list[str], embeddings: np.ndarray, cfg: BalanceConfig, seed: int
) -> BalanceResult:
    """Cluster N images and cap each cluster.

    Args:
        uids: N image ids (sampling order within clusters derives from them).
        embeddings: (N, D) float32 L2-normalised embeddings.
        cfg: number of clusters, cap, iterations.
        seed: k-means and sampling seed.
    """
    import faiss

    n = len(uids)
    emb = np.ascontiguousarray(np.asarray(embeddings, np.float32))
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must be ({n}, D), got {emb.shape}")
    if n == 0:
        return BalanceResult(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64))
    k = min(cfg.clusters, n)
    with faiss_threads(1):
        if k == 1:
            cluster = np.zeros(n, np.int64)
        else:
            km = faiss.Kmeans(
                emb.shape[1],
                k,
                niter=cfg.iterations,
                nredo=cfg.restarts,
                seed=seed,
                spherical=True,
                verbose=False,
                min_points_per_centroid=1,
                max_points_per_centroid=1 << 30,
            )
            km.train(emb)
            _, assign = km.index.search(emb, 1)
            cluster = assign[:, 0].astype(np.int64)
    sizes = np.bincount(cluster, minlength=k)
    keep = np.ones(n, bool)
    if cfg.max_per_cluster is not None:
        rank = seeded_rank(uids, seed)
        for c in np.flatnonzero(sizes > cfg.max_per_cluster):
            members = np.flatnonzero(cluster == c)
            members = members[np.argsort(rank[members], kind="stable")]
            keep[members[cfg.max_per_cluster :]] = False
    return BalanceResult(cluster, keep, sizes)
