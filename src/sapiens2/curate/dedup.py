"""Stage 4, deduplication: exact copies, perceptual-hash near-duplicates, then embedding neighbours.

All three passes are greedy in the given order (the pipeline passes images sorted by uid): an image
that is still kept removes every later image it matches, so one representative per group survives
and the result does not depend on how the work was split. Near-duplicates are found with a FAISS
binary index over the 64-bit hashes (Hamming range search); embedding neighbours with a FAISS index
over L2-normalised embeddings (inner-product range search, ``index_factory`` string from the config).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from sapiens2.curate.config import DedupConfig
from sapiens2.curate.phash import hash_bytes

_QUERY_BATCH = 4096


@contextmanager
def faiss_threads(n: int):
    """Run FAISS with ``n`` OpenMP threads inside the block (restored after)."""
    import faiss

    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


@dataclass(frozen=True)
class DedupResult:
    """Per image: ``drop`` ("" kept, ``exact_duplicate``, ``near_duplicate``, ``embedding_duplicate``)
    and ``dup_of`` (index of the kept image it duplicates, -1 when kept)."""

    drop: np.ndarray
    dup_of: np.ndarray


def _greedy(active: np.ndarray, neighbours, drop, dup_of, reason: str) -> None:
    """Visit ``active`` indices in order; a kept one removes its later neighbours."""
    removed = np.zeros(len(active), bool)
    for a in range(len(active)):
        if removed[a]:
            continue
        for b in neighbours(a):
            if b > a and not removed[b]:
                removed[b] = True
                drop[active[b]] = reason
                dup_of[active[b]] = active[a]


def _range_neighbours(index, queries: np.ndarray, radius):
    """Neighbour lists of every query (batched range search)."""
    out: list[np.ndarray] = []
    for s in range(0, len(queries), _QUERY_BATCH):
        lims, _, ids = index.range_search(queries[s : s + _QUERY_BATCH], radius)
        out.extend(np.sort(ids[lims[i] : lims[i + 1]]) for i in range(len(lims) - 1))
    return out


def deduplicate(
    sha256: list[str], phash: np.ndarray, embeddings: np.ndarray | None, cfg: DedupConfig
) -> DedupResult:
    """Find duplicates among N images given in their canonical order.

    Args:
        sha256: N hex digests of the encoded bytes.
        phash: (N,) int64 perceptual hashes.
        embeddings: (N, D) float32 L2-normalised embeddings, or None to skip embedding pruning.
        cfg: thresholds and index.

    Returns:
        :class:`DedupResult` with (N,) arrays.
    """
    import faiss

    n = len(sha256)
    phash = np.asarray(phash, np.int64)
    if phash.shape != (n,):
        raise ValueError(f"phash must have shape ({n},), got {phash.shape}")
    drop = np.array([""] * n, dtype=object)
    dup_of = np.full(n, -1, np.int64)
    first: dict[str, int] = {}
    for i, digest in enumerate(sha256):
        if digest in first:
            drop[i], dup_of[i] = "exact_duplicate", first[digest]
        else:
            first[digest] = i

    with faiss_threads(1):
        active = np.flatnonzero(drop == "")
        if len(active) > 1:
            codes = hash_bytes(phash[active])
            index = faiss.IndexBinaryFlat(64)
            index.add(codes)
            # binary range search returns distances strictly below the radius
            nbrs = _range_neighbours(index, codes, cfg.phash_max_distance + 1)
            _greedy(active, lambda a: nbrs[a], drop, dup_of, "near_duplicate")

        active = np.flatnonzero(drop == "")
        if embeddings is not None and cfg.min_similarity is not None and len(active) > 1:
            emb = np.ascontiguousarray(np.asarray(embeddings, np.float32)[active])
            if emb.ndim != 2:
                raise ValueError(f"embeddings must be (N, D), got {embeddings.shape}")
            index = faiss.index_factory(emb.shape[1], cfg.index, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(emb)
            if hasattr(index, "nprobe"):
                index.nprobe = cfg.nprobe
            index.add(emb)
            # inner-product range search returns similarities strictly above the radius
            radius = float(np.nextafter(np.float32(cfg.min_similarity), np.float32(-2)))
            nbrs = _range_neighbours(index, emb, radius)
            _greedy(active, lambda a: nbrs[a], drop, dup_of, "embedding_duplicate")
    return DedupResult(drop, dup_of)
