"""COCO keypoint AP/AR with exactly the semantics of pycocotools' ``COCOeval(iouType="keypoints")``.

Vectorized numpy re-implementation (no pycocotools dependency) for any number of keypoints and any
per-keypoint OKS sigmas. What it reproduces, step by step (``loadRes`` + ``evaluate`` +
``accumulate`` + ``summarize``):

* Images = every ``gt["images"]`` id; categories = every ``gt["categories"]`` id; evaluation is per
  (category, image).
* Detection area (used only to ignore *unmatched* detections outside an area range): if the first
  result carries a non-empty ``bbox`` (pycocotools' ``loadRes`` then takes its bbox branch), the
  area is ``bbox[2] * bbox[3]`` for every result; otherwise it is the extent of the result's
  keypoints ``(max x - min x) * (max y - min y)`` over all keypoints.
* A ground truth is ignored when ``iscrowd`` or ``num_keypoints == 0``; per area range also when its
  ``area`` is outside the range. Area ranges: all ``[0, 1e10]``, medium ``[32², 96²]``,
  large ``[96², 1e10]``.
* Detections per image are sorted by score (stable) and cut to ``maxDets = 20``.
* OKS: ``e_k = (dx² + dy²) / (2σ_k)² / (area + eps) / 2``, mean of ``exp(-e_k)`` over the labelled
  (``v > 0``) ground-truth keypoints; for a ground truth without labelled keypoints ``dx, dy`` are
  the distances of the detected keypoints to the box doubled around the GT bbox and all keypoints
  count.
* Greedy matching per OKS threshold (0.50:0.05:0.95) in score order: a detection takes the
  not-yet-matched (crowds may be matched again) ground truth with the highest OKS ≥ threshold
  (ties: the later one), preferring non-ignored ground truths; a detection matched to an ignored
  ground truth is ignored; an unmatched detection outside the area range is ignored.
* Precision is interpolated (made monotone) and read at 101 recall points; AP is the mean over
  thresholds, recall points and categories of the entries that exist (-1 when none), AR the mean
  of the final recalls.
* pycocotools quirk kept on purpose: a detection matched to a ground truth whose ``id`` is 0
  counts as unmatched in the accumulation (pycocotools tests ``dtMatches`` for non-zero ids).

Differences from pycocotools: malformed input raises ``ValueError`` (pycocotools would assert or
silently drop annotations of unknown images / categories), the inputs are never modified, and
results with ``segmentation`` masks are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COCO17_SIGMAS = (
    np.array(
        [
            0.26,
            0.25,
            0.25,
            0.35,
            0.35,
            0.79,
            0.79,
            0.72,
            0.72,
            0.62,
            0.62,
            1.07,
            1.07,
            0.87,
            0.87,
            0.89,
            0.89,
        ]
    )
    / 10.0
)
"""The 17 COCO body sigmas, exactly as pycocotools' ``Params.kpt_oks_sigmas``."""

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = {"all": (0.0**2, 1e5**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}
MAX_DETS = 20
METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

_EPS = np.spacing(1)
_CHUNK_ELEMENTS = 1 << 21  # bound on N·D·G·K elements materialised at once


@dataclass(frozen=True)
class KeypointGroundTruth:
    """Parsed COCO keypoint ground truth (one row per annotation, in file order).

    Attributes:
        image_ids: (I,) sorted unique image ids of ``gt["images"]``.
        category_ids: (C,) sorted unique category ids of ``gt["categories"]``.
        image: (N,) image id of each annotation.
        category: (N,) category id.
        ann_id: (N,) annotation id.
        area: (N,) float64 ``area``.
        iscrowd: (N,) bool.
        num_keypoints: (N,) int ``num_keypoints``.
        bbox: (N, 4) float64 xywh.
        keypoints: (N, K, 3) float64 (x, y, v).
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    image: np.ndarray
    category: np.ndarray
    ann_id: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    num_keypoints: np.ndarray
    bbox: np.ndarray
    keypoints: np.ndarray

    def select_keypoints(self, indices: Sequence[int]) -> KeypointGroundTruth:
        """The same annotations restricted to the keypoints ``indices`` (e.g. one body group)."""
        idx = np.asarray(indices, dtype=np.int64)
        return KeypointGroundTruth(**{**self.__dict__, "keypoints": self.keypoints[:, idx]})


@dataclass(frozen=True)
class KeypointDetections:
    """Parsed keypoint results (one row per result, in input order).

    Attributes:
        image: (M,) image id. category: (M,) category id. score: (M,) float64.
        area: (M,) float64 area used for the area-range ignore rule.
        keypoints: (M, K, 2) float64 (x, y).
    """

    image: np.ndarray
    category: np.ndarray
    score: np.ndarray
    area: np.ndarray
    keypoints: np.ndarray

    def select_keypoints(self, indices: Sequence[int]) -> KeypointDetections:
        idx = np.asarray(indices, dtype=np.int64)
        return KeypointDetections(**{**self.__dict__, "keypoints": self.keypoints[:, idx]})


def _triplets(values, num_keypoints: int | None, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size % 3 != 0 or (num_keypoints is not None and arr.size != 3 * num_keypoints):
        expected = (
            "a multiple of 3"
            if num_keypoints is None
            else f"{3 * num_keypoints} (3 x {num_keypoints})"
        )
        raise ValueError(f"{what}: keypoint list has {arr.size} values, expected {expected}")
    return arr.reshape(-1, 3)


def parse_ground_truth(
    gt: dict, *, kpt_key: str = "keypoints", num_keypoints: int | None = None
) -> KeypointGroundTruth:
    """Parse a COCO-format keypoint ground-truth dict.

    Args:
        gt: dict with ``images`` (each with ``id``), ``categories`` (each with ``id``) and
            ``annotations`` (each with ``id``, ``image_id``, ``category_id``, ``kpt_key`` (3·K
            numbers), ``num_keypoints``, ``area``, ``bbox`` and ``iscrowd``).
        kpt_key: annotation field holding the keypoint triplets.
        num_keypoints: expected K (checked), or None to take it from the first annotation.

    Returns:
        The parsed arrays.
    """
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"ground truth has no '{key}' list")
    image_ids = np.unique(np.asarray([img["id"] for img in gt["images"]], dtype=np.int64))
    category_ids = np.unique(np.asarray([c["id"] for c in gt["categories"]], dtype=np.int64))
    anns = gt["annotations"]
    rows = {
        k: []
        for k in (
            "image",
            "category",
            "ann_id",
            "area",
            "iscrowd",
            "num_keypoints",
            "bbox",
            "keypoints",
        )
    }
    for i, ann in enumerate(anns):
        where = f"ground-truth annotation #{i} (id {ann.get('id')})"
        for key in (
            "id",
            "image_id",
            "category_id",
            kpt_key,
            "num_keypoints",
            "area",
            "bbox",
            "iscrowd",
        ):
            if key not in ann:
                raise ValueError(f"{where}: missing field '{key}'")
        kp = _triplets(ann[kpt_key], num_keypoints, f"{where} field '{kpt_key}'")
        num_keypoints = kp.shape[0]
        bbox = np.asarray(ann["bbox"], dtype=np.float64).reshape(-1)
        if bbox.size != 4:
            raise ValueError(f"{where}: bbox must have 4 numbers (x, y, w, h), got {bbox.size}")
        rows["image"].append(ann["image_id"])
        rows["category"].append(ann["category_id"])
        rows["ann_id"].append(ann["id"])
        rows["area"].append(ann["area"])
        rows["iscrowd"].append(bool(ann["iscrowd"]))
        rows["num_keypoints"].append(ann["num_keypoints"])
        rows["bbox"].append(bbox)
        rows["keypoints"].append(kp)
    k = num_keypoints if num_keypoints is not None else 0
    parsed = KeypointGroundTruth(
        image_ids=image_ids,
        category_ids=category_ids,
        image=np.asarray(rows["image"], dtype=np.int64),
        category=np.asarray(rows["category"], dtype=np.int64),
        ann_id=np.asarray(rows["ann_id"], dtype=np.int64),
        area=np.asarray(rows["area"], dtype=np.float64),
        iscrowd=np.asarray(rows["iscrowd"], dtype=bool),
        num_keypoints=np.asarray(rows["num_keypoints"], dtype=np.int64),
        bbox=np.asarray(rows["bbox"], dtype=np.float64).reshape(-1, 4),
        keypoints=np.asarray(rows["keypoints"], dtype=np.float64).reshape(-1, k, 3),
    )
    _check_known(parsed.image, image_ids, "ground-truth annotation", "image_id", "gt['images']")
    _check_known(
        parsed.category, category_ids, "ground-truth annotation", "category_id", "gt['categories']"
    )
    return parsed


def _check_known(values: np.ndarray, known: np.ndarray, what: str, field: str, where: str) -> None:
    bad = ~np.isin(values, known)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} #{i}: {field} {int(values[i])} is not in {where}")


def parse_results(
    results: Sequence[dict],
    gt: KeypointGroundTruth,
    *,
    kpt_key: str = "keypoints",
    area_kpt_key: str | None = None,
) -> KeypointDetections:
    """Parse COCO keypoint results (``image_id``, ``category_id``, ``kpt_key`` (3·K), ``score``).

    Args:
        results: the result dicts (not modified).
        gt: the parsed ground truth (for K, image and category checks).
        kpt_key: field holding the keypoint triplets to evaluate.
        area_kpt_key: field whose keypoint extent gives the detection area when the first result has
            no ``bbox`` (default ``kpt_key``; pycocotools always uses ``"keypoints"``).

    Returns:
        The parsed arrays.
    """
    k = gt.keypoints.shape[1]
    area_key = area_kpt_key or kpt_key
    first_bbox = results[0].get("bbox") if len(results) else None
    use_bbox = first_bbox is not None and len(first_bbox) > 0  # pycocotools loadRes bbox branch
    image, category, score, area, kpts = [], [], [], [], []
    for i, res in enumerate(results):
        where = f"result #{i}"
        needed = ["image_id", "category_id", kpt_key, "score"] + (
            ["bbox"] if use_bbox else [area_key]
        )
        for key in needed:
            if key not in res:
                raise ValueError(f"{where}: missing field '{key}'")
        kp = _triplets(res[kpt_key], k, f"{where} field '{kpt_key}'")
        if use_bbox:
            bb = np.asarray(res["bbox"], dtype=np.float64).reshape(-1)
            if bb.size != 4:
                raise ValueError(f"{where}: bbox must have 4 numbers (x, y, w, h), got {bb.size}")
            area.append(bb[2] * bb[3])
        else:
            ak = (
                kp
                if area_key == kpt_key
                else _triplets(res[area_key], None, f"{where} field '{area_key}'")
            )
            x, y = ak[:, 0], ak[:, 1]
            area.append((np.max(x) - np.min(x)) * (np.max(y) - np.min(y)))
        image.append(res["image_id"])
        category.append(res["category_id"])
        score.append(res["score"])
        kpts.append(kp[:, :2])
    parsed = KeypointDetections(
        image=np.asarray(image, dtype=np.int64),
        category=np.asarray(category, dtype=np.int64),
        score=np.asarray(score, dtype=np.float64),
        area=np.asarray(area, dtype=np.float64),
        keypoints=np.asarray(kpts, dtype=np.float64).reshape(-1, k, 2),
    )
    _check_known(parsed.image, gt.image_ids, "result", "image_id", "the ground-truth images")
    _check_known(
        parsed.category, gt.category_ids, "result", "category_id", "the ground-truth categories"
    )
    if not np.all(np.isfinite(parsed.score)):
        raise ValueError("results: every 'score' must be a finite number")
    return parsed


def coco_keypoint_ap(
    gt: dict,
    results: Sequence[dict],
    sigmas: Sequence[float] | np.ndarray | None = None,
    *,
    kpt_key: str = "keypoints",
) -> dict[str, float]:
    """COCO keypoint AP/AR, equal to pycocotools' ``COCOeval(gt, dt, "keypoints")`` summary.

    Args:
        gt: COCO-format ground-truth dict (``images``, ``categories``, ``annotations`` with
            ``kpt_key``, ``num_keypoints``, ``area``, ``bbox``, ``iscrowd``, ``id``, ``image_id``,
            ``category_id``).
        results: COCO-format results, each with ``image_id``, ``category_id``, ``kpt_key`` (3·K
            numbers; the third of each triplet is not used) and ``score``.
        sigmas: (K,) per-keypoint OKS sigmas (``params.kpt_oks_sigmas``); default the 17 COCO ones.
        kpt_key: field holding the keypoint triplets in both ground truth and results.

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` as fractions
        (pycocotools' ``stats``; -1.0 where there is nothing to evaluate).
    """
    sig = _sigmas(sigmas)
    parsed_gt = parse_ground_truth(gt, kpt_key=kpt_key, num_keypoints=sig.size)
    parsed_dt = parse_results(results, parsed_gt, kpt_key=kpt_key)
    return evaluate_parsed(parsed_gt, parsed_dt, sig)


def _sigmas(sigmas) -> np.ndarray:
    sig = COCO17_SIGMAS if sigmas is None else np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if sig.size == 0 or not np.all(sig > 0):
        raise ValueError("sigmas must be a non-empty list of positive numbers")
    return sig


def evaluate_parsed(
    gt: KeypointGroundTruth, dt: KeypointDetections, sigmas: np.ndarray
) -> dict[str, float]:
    """The COCOeval computation on parsed arrays (see the module docstring).

    Args:
        gt: parsed ground truth with K keypoints.
        dt: parsed detections with K keypoints.
        sigmas: (K,) OKS sigmas.

    Returns:
        The ten summary numbers (see ``coco_keypoint_ap``).
    """
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    k = sigmas.size
    if gt.keypoints.shape[1] != k or dt.keypoints.shape[1] != k:
        raise ValueError(
            f"{k} sigmas but {gt.keypoints.shape[1]} ground-truth and {dt.keypoints.shape[1]} result keypoints"
        )
    precision, recall = _accumulate(gt, dt, sigmas)
    return _summarize(precision, recall)


def _accumulate(gt: KeypointGroundTruth, dt: KeypointDetections, sigmas: np.ndarray):
    """Returns precision (T, R, C, A) and recall (T, C, A) like COCOeval.eval (single maxDets)."""
    cats, imgs = gt.category_ids, gt.image_ids
    n_t, n_r, n_c, n_a = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(cats), len(AREA_RANGES)
    precision = -np.ones((n_t, n_r, n_c, n_a))
    recall = -np.ones((n_t, n_c, n_a))

    # (category, image) pair of every annotation / detection, in canonical (cat, image) order.
    gt_pair = np.searchsorted(cats, gt.category) * len(imgs) + np.searchsorted(imgs, gt.image)
    dt_pair = np.searchsorted(cats, dt.category) * len(imgs) + np.searchsorted(imgs, dt.image)
    # ground truths of one pair keep file order; detections sorted by score (stable), top MAX_DETS
    gt_order = np.argsort(gt_pair, kind="stable")
    dt_order = np.lexsort((-dt.score, dt_pair))  # by pair, then score descending, stable
    dt_order = dt_order[_rank_within(dt_pair[dt_order]) < MAX_DETS]
    pairs = np.unique(np.concatenate([gt_pair, dt_pair]))  # pairs with something to evaluate
    if pairs.size == 0:
        return precision, recall
    g_start, g_count = _segments(gt_pair[gt_order], pairs)
    d_start, d_count = _segments(dt_pair[dt_order], pairs)

    gt_base_ignore = gt.iscrowd | (gt.num_keypoints == 0)
    k = sigmas.size
    n_pairs = pairs.size
    max_d = int(d_count.max()) if n_pairs else 0
    # per pair, per area range: tp / ignore flags of each detection (T, D)
    dt_tp = np.zeros((n_a, n_pairs, n_t, max_d), dtype=bool)
    dt_ig = np.zeros((n_a, n_pairs, n_t, max_d), dtype=bool)
    n_pos = np.zeros((n_a, n_pairs), dtype=np.int64)

    # padding slots of the chunks index one extra all-zero row appended to every source array
    def pad(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.zeros((1, *a.shape[1:]), dtype=a.dtype)])

    padded_gt = tuple(
        pad(a) for a in (gt.keypoints, gt.bbox, gt.area, gt.iscrowd, gt_base_ignore, gt.ann_id)
    )
    padded_dt = (pad(dt.keypoints), pad(dt.area))

    # chunks of pairs with similar ground-truth counts to bound padding and memory
    by_g = np.argsort(g_count, kind="stable")
    i = 0
    while i < n_pairs:
        j = i + 1  # grow the chunk while (pairs x D x G_max x K) stays within the budget
        while (
            j < n_pairs
            and (j - i + 1) * max(max_d, 1) * max(int(g_count[by_g[j]]), 1) * k <= _CHUNK_ELEMENTS
        ):
            j += 1
        chunk = by_g[i:j]
        _evaluate_chunk(
            chunk, gt, dt, sigmas, gt_order, dt_order, g_start, g_count, d_start, d_count,
            padded_gt, padded_dt, max_d, dt_tp, dt_ig, n_pos,
        )  # fmt: skip
        i = j

    # accumulate per (category, area range)
    pair_cat = pairs // len(imgs)
    d_valid = np.arange(max_d)[None, :] < d_count[:, None]  # (P, D)
    scores_pd = np.zeros((n_pairs, max_d))
    scores_pd[d_valid] = dt.score[dt_order]  # dt_order is grouped by pair in pair order
    for c in range(n_c):
        sel = np.flatnonzero(pair_cat == c)  # ascending pair index = ascending image id
        if sel.size == 0:
            continue
        valid = d_valid[sel]  # (S, D)
        scores = scores_pd[sel][valid]  # image-major, score-sorted within image
        order = np.argsort(-scores, kind="mergesort")
        for a in range(n_a):
            npig = int(n_pos[a, sel].sum())
            if npig == 0:
                continue
            tp = dt_tp[a, sel].transpose(1, 0, 2)[:, valid][:, order]  # (T, n)
            ig = dt_ig[a, sel].transpose(1, 0, 2)[:, valid][:, order]
            tps = np.logical_and(tp, ~ig)
            fps = np.logical_and(~tp, ~ig)
            tp_sum = np.cumsum(tps, axis=1).astype(float)
            fp_sum = np.cumsum(fps, axis=1).astype(float)
            n_d = tp_sum.shape[1]
            for t in range(n_t):
                rc = tp_sum[t] / npig
                pr = tp_sum[t] / (fp_sum[t] + tp_sum[t] + _EPS)
                recall[t, c, a] = rc[-1] if n_d else 0
                if n_d:
                    pr = np.maximum.accumulate(pr[::-1])[::-1]
                inds = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                q = np.zeros(n_r)
                ok = inds < n_d
                q[ok] = pr[inds[ok]]
                precision[t, :, c, a] = q
    return precision, recall


def _rank_within(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal keys (keys already grouped)."""
    n = sorted_keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n) - run_start


def _segments(sorted_keys: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start = np.searchsorted(sorted_keys, pairs, side="left")
    end = np.searchsorted(sorted_keys, pairs, side="right")
    return start, end - start


def _evaluate_chunk(
    chunk, gt, dt, sigmas, gt_order, dt_order, g_start, g_count, d_start, d_count,
    padded_gt, padded_dt, max_d, dt_tp, dt_ig, n_pos,
) -> None:  # fmt: skip
    n = chunk.size
    k = sigmas.size
    g_max = max(int(g_count[chunk].max()), 1)
    d_max = max(int(d_count[chunk].max()), 1)  # detections of this chunk (<= max_d unless 0)
    g_idx = np.full((n, g_max), gt.image.size, dtype=np.int64)
    g_ok = np.zeros((n, g_max), dtype=bool)
    d_idx = np.full((n, d_max), dt.image.size, dtype=np.int64)
    d_ok = np.zeros((n, d_max), dtype=bool)
    for r, p in enumerate(chunk):
        gc, dc = g_count[p], d_count[p]
        g_idx[r, :gc] = gt_order[g_start[p] : g_start[p] + gc]
        g_ok[r, :gc] = True
        d_idx[r, :dc] = dt_order[d_start[p] : d_start[p] + dc]
        d_ok[r, :dc] = True

    gt_kps, gt_bbox, gt_area, gt_crowd, gt_ig0, gt_ids = padded_gt
    dt_kps, dt_area = padded_dt

    # ---- OKS (n, D, G) ----
    g_kp = gt_kps[g_idx]  # (n, G, K, 3)
    xg, yg, vg = g_kp[..., 0], g_kp[..., 1], g_kp[..., 2]
    vis = vg > 0
    k1 = vis.sum(-1)  # (n, G)
    bb = gt_bbox[g_idx]  # (n, G, 4)
    x0 = bb[..., 0] - bb[..., 2]
    x1 = bb[..., 0] + bb[..., 2] * 2
    y0 = bb[..., 1] - bb[..., 3]
    y1 = bb[..., 1] + bb[..., 3] * 2
    d_kp = dt_kps[d_idx]  # (n, D, K, 2)
    xd = d_kp[:, :, None, :, 0]  # (n, D, 1, K)
    yd = d_kp[:, :, None, :, 1]
    dx = xd - xg[:, None]  # (n, D, G, K)
    dy = yd - yg[:, None]
    # ground truths without labelled keypoints: distance to the box doubled around the GT bbox
    r_box, g_box = np.nonzero((k1 == 0) & g_ok)
    if r_box.size:
        xb, yb = d_kp[r_box, :, :, 0], d_kp[r_box, :, :, 1]  # (M, D, K)
        lo_x, hi_x = x0[r_box, g_box][:, None, None], x1[r_box, g_box][:, None, None]
        lo_y, hi_y = y0[r_box, g_box][:, None, None], y1[r_box, g_box][:, None, None]
        dx[r_box, :, g_box] = np.maximum(0.0, lo_x - xb) + np.maximum(0.0, xb - hi_x)
        dy[r_box, :, g_box] = np.maximum(0.0, lo_y - yb) + np.maximum(0.0, yb - hi_y)
    variances = (sigmas * 2) ** 2
    area = gt_area[g_idx][:, None, :, None]
    e = (dx**2 + dy**2) / variances / (area + _EPS) / 2
    np.negative(e, out=e)
    np.exp(e, out=e)
    weight = (vis | (k1 == 0)[..., None])[:, None]  # (n, 1, G, K): labelled points, or all
    count = np.where(k1 > 0, k1, k)[:, None, :]  # (n, 1, G)
    oks = np.sum(e * weight, axis=-1) / count  # (n, D, G)
    oks = np.where(g_ok[:, None, :] & d_ok[:, :, None], oks, -np.inf)

    crowd = gt_crowd[g_idx] & g_ok  # (n, G)
    base_ig = gt_ig0[g_idx]
    g_area = gt_area[g_idx]
    g_id_nonzero = gt_ids[g_idx] != 0
    d_area = dt_area[d_idx]  # (n, D)
    thr = IOU_THRESHOLDS  # pycocotools uses min(t, 1 - 1e-10) == t for these thresholds
    n_t = thr.size
    rows = np.arange(n)[:, None]
    for a, (lo, hi) in enumerate(AREA_RANGES.values()):
        ig = base_ig | (g_area < lo) | (g_area > hi) | ~g_ok  # padded ground truths: ignored
        n_pos[a, chunk] = np.sum(~ig & g_ok, axis=1)
        # pycocotools sorts ground truths non-ignored first (stable)
        perm = np.argsort(ig, axis=1, kind="stable")
        ig_s = np.take_along_axis(ig, perm, 1)
        crowd_s = np.take_along_axis(crowd, perm, 1)
        idnz_s = np.take_along_axis(g_id_nonzero, perm, 1)
        oks_s = np.take_along_axis(oks, perm[:, None, :], 2)  # (n, D, G)
        matched = np.zeros((n, n_t, g_max), dtype=bool)
        tp = np.zeros((n, n_t, d_max), dtype=bool)
        dig = np.zeros((n, n_t, d_max), dtype=bool)
        for d in range(d_max):
            o = oks_s[:, d, None, :]  # (n, 1, G)
            free = (~matched | crowd_s[:, None, :]) & (o >= thr[None, :, None])  # (n, T, G)
            m = np.full((n, n_t), -1, dtype=np.int64)
            for phase_ig in (True, False):  # last assignment wins: non-ignored preferred
                cand = free & (ig_s[:, None, :] == phase_ig)
                val = np.where(cand, o, -np.inf)
                last_best = g_max - 1 - np.argmax(val[..., ::-1], axis=-1)  # last index of the max
                has = cand.any(-1)
                m = np.where(has & ((m < 0) | ~phase_ig), last_best, m)
            hit = m >= 0
            mm = np.where(hit, m, 0)
            r_hit, t_hit = np.nonzero(hit)
            matched[r_hit, t_hit, mm[r_hit, t_hit]] = True
            tp[:, :, d] = hit & idnz_s[rows, mm]
            dig[:, :, d] = hit & ig_s[rows, mm]
        out_of_range = ((d_area < lo) | (d_area > hi))[:, None, :]  # (n, 1, D)
        dig |= ~tp & out_of_range
        w = min(d_max, max_d)
        dt_tp[a, chunk, :, :w] = tp[:, :, :w]
        dt_ig[a, chunk, :, :w] = dig[:, :, :w]


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    area_index = {name: i for i, name in enumerate(AREA_RANGES)}

    def mean_valid(s: np.ndarray) -> float:
        v = s[s > -1]
        return float(np.mean(v)) if v.size else -1.0

    def ap(iou=None, area="all"):
        s = precision
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        return mean_valid(s[:, :, :, area_index[area]])

    def ar(iou=None, area="all"):
        s = recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        return mean_valid(s[:, :, area_index[area]])

    return {
        "AP": ap(),
        "AP50": ap(0.5),
        "AP75": ap(0.75),
        "APm": ap(area="medium"),
        "APl": ap(area="large"),
        "AR": ar(),
        "AR50": ar(0.5),
        "AR75": ar(0.75),
        "ARm": ar(area="medium"),
        "ARl": ar(area="large"),
    }


class CocoKeypointMetric:
    """Accumulator for ``coco_keypoint_ap``: collects COCO results, evaluates on ``compute()``.

    Args:
        gt: COCO-format ground truth.
        sigmas: (K,) OKS sigmas (default: COCO-17).
        kpt_key: keypoint field name.

    ``update(results)`` appends COCO result dicts; ``sync()`` gathers the results of all ranks
    (``all_gather_object``, exact, rank order) so ``compute()`` on any rank evaluates all of them.
    """

    def __init__(self, gt: dict, sigmas=None, *, kpt_key: str = "keypoints") -> None:
        self.gt = gt
        self.sigmas = sigmas
        self.kpt_key = kpt_key
        self.reset()

    def reset(self) -> None:
        self._local: list[dict] = []
        self._global: list[dict] | None = None

    def update(self, results: Sequence[dict]) -> None:
        self._global = None
        self._local.extend(dict(r) for r in results)

    def sync(self, group=None) -> CocoKeypointMetric:
        from sapiens2.metrics.distributed import all_gather_objects

        self._global = [r for part in all_gather_objects(self._local, group) for r in part]
        return self

    all_reduce = sync

    def compute(self) -> dict[str, float]:
        results = self._global if self._global is not None else self._local
        return coco_keypoint_ap(self.gt, results, self.sigmas, kpt_key=self.kpt_key)
