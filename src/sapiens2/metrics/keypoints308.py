"""Whole-body 308-keypoint evaluation as the official ``Keypoints308Evaluator`` does it
(``sapiens/pose/src/evaluators/keypoints308_evaluator.py``).

Pipeline on top-down predictions (one per person box):

1. per image, predictions sharing an ``id`` are de-duplicated (sorted by ``id``, first kept);
2. rescoring: ``score = bbox_score × mean(keypoint scores > 0.2)`` (0 when no keypoint passes);
3. OKS-NMS per image at 0.9 with the 308 sigmas over all 308 points, the instance area being the
   extent of its 308 keypoints (``Δx·Δy``): a candidate is dropped when its OKS with an already kept,
   higher-scored instance is > 0.9;
4. COCO keypoint AP/AR (``coco_keypoints``, pycocotools semantics) for the groups body (17), foot
   (6), face (238), left hand (20), right hand (20) with the sigmas sliced to each group, and for the
   whole body (308). The whole-body numbers are the headline, as in the official evaluator.

Choices where the official code depends on a modified, unpublished xtcocotools:

* ground-truth group keypoints are the group's slice of ``goliath_wholebody_kpts``; the ignore rule
  uses the annotation's ``num_keypoints`` for every group (as xtcocotools does), so a group with no
  labelled point in a non-ignored person falls back to the OKS bbox rule;
* the detection area for the area ranges (medium / large) is the extent of the body-17 keypoints
  for every group, because (xt)cocotools' ``loadRes`` computes it from the results' ``keypoints``
  field, which holds the body points in the official results file;
* NMS ties in score keep input order (mmpose uses an unstable sort), OKS in float64 (mmpose float32).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sapiens2.metrics.coco_keypoints import (
    KeypointDetections,
    evaluate_parsed,
    parse_ground_truth,
)
from sapiens2.metrics.distributed import all_gather_objects

GROUPS = ("body", "foot", "face", "left_hand", "right_hand")
"""Evaluated groups of the 308 layout (the 7 'extra' points are only part of the whole body)."""

RESULT_FIELDS = {
    "body": "keypoints",
    "foot": "foot_kpts",
    "face": "face_kpts",
    "left_hand": "lefthand_kpts",
    "right_hand": "righthand_kpts",
}
"""Official results-file field of each group (the whole body is ``goliath_wholebody_kpts``)."""


def _meta():
    from sapiens2.data.metadata import keypoints308

    return keypoints308()


def _np(x: Any) -> np.ndarray:
    """numpy float64 copy of a list / array / (CUDA) tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _instance_arrays(pred: Mapping[str, Any], index: int, num_keypoints: int):
    where = f"prediction #{index}"
    for key in ("image_id", "keypoints"):
        if key not in pred:
            raise ValueError(f"{where}: missing field '{key}'")
    kp = _np(pred["keypoints"])
    if kp.ndim == 1 and kp.size in (2 * num_keypoints, 3 * num_keypoints):
        kp = kp.reshape(num_keypoints, -1)
    if kp.shape not in ((num_keypoints, 2), (num_keypoints, 3)):
        raise ValueError(
            f"{where}: 'keypoints' has shape {kp.shape}, expected ({num_keypoints}, 2) or ({num_keypoints}, 3)"
        )
    if "keypoint_scores" in pred:
        scores = _np(pred["keypoint_scores"]).reshape(-1)
        if scores.size != num_keypoints:
            raise ValueError(
                f"{where}: 'keypoint_scores' has {scores.size} values, expected {num_keypoints}"
            )
    elif kp.shape[1] == 3:
        scores = kp[:, 2]
    else:
        raise ValueError(f"{where}: no 'keypoint_scores' and 'keypoints' has no score column")
    return kp[:, :2], scores


def rescore(
    keypoint_scores: np.ndarray, bbox_score: np.ndarray | float, thr: float = 0.2
) -> np.ndarray:
    """Official ``bbox_keypoint`` score: ``bbox_score × mean(keypoint scores > thr)`` (0 if none).

    Args:
        keypoint_scores: (N, K) keypoint confidences.
        bbox_score: (N,) or scalar person-box scores.
        thr: keypoint score threshold (strictly greater passes).

    Returns:
        (N,) float64 instance scores.
    """
    s = np.asarray(keypoint_scores, dtype=np.float64)
    above = s > thr
    n = above.sum(-1)
    mean = np.where(n > 0, np.where(above, s, 0.0).sum(-1) / np.maximum(n, 1), 0.0)
    return mean * np.asarray(bbox_score, dtype=np.float64)


def keypoint_extent_area(keypoints: np.ndarray) -> np.ndarray:
    """(N, K, ≥2) keypoints -> (N,) area ``(max x - min x) * (max y - min y)``."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape[0] == 0:
        return np.zeros(0)
    return (kp[..., 0].max(-1) - kp[..., 0].min(-1)) * (kp[..., 1].max(-1) - kp[..., 1].min(-1))


def oks_matrix(keypoints: np.ndarray, areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Pairwise OKS used by OKS-NMS (all keypoints count).

    ``oks[i, j] = mean_k exp(-d²_ijk / (2σ_k)² / ((a_i + a_j)/2 + eps) / 2)``.

    Args:
        keypoints: (N, K, 2) coordinates.
        areas: (N,) instance areas.
        sigmas: (K,) OKS sigmas.

    Returns:
        (N, N) symmetric OKS matrix.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    var = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    d2 = ((kp[:, None, :, 0] - kp[None, :, :, 0]) ** 2) + (
        (kp[:, None, :, 1] - kp[None, :, :, 1]) ** 2
    )
    a = np.asarray(areas, dtype=np.float64)
    e = d2 / var / ((a[:, None] + a[None, :]) / 2 + np.spacing(1))[..., None] / 2
    return np.mean(np.exp(-e), axis=-1)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: np.ndarray,
    thr: float = 0.9,
) -> np.ndarray:
    """Greedy OKS non-maximum suppression of the instances of one image.

    Args:
        keypoints: (N, K, 2). scores: (N,). areas: (N,). sigmas: (K,).
        thr: a candidate is suppressed when its OKS with a kept instance is > thr.

    Returns:
        Indices of the kept instances, highest score first (ties: input order).
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if order.size <= 1:
        return order
    oks = oks_matrix(keypoints, areas, sigmas)
    alive = np.ones(order.size, dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if not alive[pos]:
            continue
        keep.append(i)
        alive[pos + 1 :] &= oks[i, order[pos + 1 :]] <= thr
    return np.asarray(keep, dtype=np.int64)


def score_and_nms(
    predictions: Sequence[Mapping[str, Any]],
    *,
    sigmas: Sequence[float] | np.ndarray | None = None,
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
) -> list[dict[str, Any]]:
    """De-duplicate, rescore and OKS-NMS top-down predictions (steps 1-3 of the module docstring).

    Args:
        predictions: one dict per person instance: ``image_id``; ``keypoints`` (K, 2) or (K, 3)
            image coordinates; ``keypoint_scores`` (K,) (or the third column of ``keypoints``);
            optional ``bbox_score`` (default 1.0, e.g. ground-truth boxes), optional ``id``
            (instances of one image with the same id are duplicates), optional ``category_id``
            (default 1).
        sigmas: (K,) OKS sigmas for the NMS (default: the 308 sigmas).
        keypoint_score_thr: keypoint score threshold of the rescoring.
        nms_thr: OKS-NMS threshold, or None to skip the NMS.

    Returns:
        The kept instances, image by image in first-appearance order, each a dict with
        ``image_id``, ``category_id``, ``keypoints`` (K, 2) array, ``keypoint_scores`` (K,) array,
        ``score`` (float) and ``area`` (keypoint extent, float).
    """
    sig = _meta().sigmas if sigmas is None else np.asarray(sigmas, dtype=np.float64).reshape(-1)
    k = sig.size
    by_image: dict[Any, list[int]] = {}
    parsed = []
    for i, pred in enumerate(predictions):
        kp, ks = _instance_arrays(pred, i, k)
        bbox_score = float(pred.get("bbox_score", 1.0))
        parsed.append((kp, ks, bbox_score))
        by_image.setdefault(pred["image_id"], []).append(i)
    out: list[dict[str, Any]] = []
    for image_id, idx in by_image.items():
        if all("id" in predictions[i] for i in idx):
            idx = sorted(idx, key=lambda i: predictions[i]["id"])  # stable: first of equal ids kept
            idx = [
                i
                for n, i in enumerate(idx)
                if n == 0 or predictions[i]["id"] != predictions[idx[n - 1]]["id"]
            ]
        kps = np.stack([parsed[i][0] for i in idx])
        kss = np.stack([parsed[i][1] for i in idx])
        scores = rescore(kss, np.asarray([parsed[i][2] for i in idx]), keypoint_score_thr)
        areas = keypoint_extent_area(kps)
        keep = (
            oks_nms(kps, scores, areas, sig, nms_thr)
            if nms_thr is not None
            else np.arange(len(idx))
        )
        for j in keep:
            out.append(
                {
                    "image_id": image_id,
                    "category_id": predictions[idx[j]].get("category_id", 1),
                    "keypoints": kps[j],
                    "keypoint_scores": kss[j],
                    "score": float(scores[j]),
                    "area": float(areas[j]),
                }
            )
    return out


def to_results_json(instances: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The official results-file records of ``score_and_nms`` output (JSON-serialisable).

    Each record: ``image_id``, ``category_id``, ``score``, ``goliath_wholebody_kpts`` (308×3 flat,
    x, y, keypoint score) and the group fields ``keypoints`` (body 17), ``foot_kpts``, ``face_kpts``,
    ``lefthand_kpts``, ``righthand_kpts`` (each flat x, y, score in group order).
    """
    groups = _meta().groups
    records = []
    for inst in instances:
        trip = np.concatenate(
            [np.asarray(inst["keypoints"]), np.asarray(inst["keypoint_scores"])[:, None]], 1
        )
        rec = {
            "image_id": inst["image_id"],
            "category_id": inst["category_id"],
            "score": float(inst["score"]),
        }
        rec["goliath_wholebody_kpts"] = trip.ravel().tolist()
        for g, field in RESULT_FIELDS.items():
            rec[field] = trip[list(groups[g])].ravel().tolist()
        records.append(rec)
    return records


def evaluate_keypoints308(
    gt: dict,
    predictions: Sequence[Mapping[str, Any]],
    *,
    kpt_key: str = "goliath_wholebody_kpts",
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
) -> dict[str, Any]:
    """Official-protocol whole-body evaluation of top-down 308-keypoint predictions.

    Args:
        gt: COCO-format ground truth whose annotations carry ``kpt_key`` (308×3 flat, v in
            {0, 1, 2}), ``num_keypoints``, ``area``, ``bbox``, ``iscrowd``, ``id``, ``image_id``,
            ``category_id`` (the dataset ``pose.json`` layout).
        predictions: per-instance dicts as accepted by ``score_and_nms``.
        kpt_key: ground-truth field with the 308 keypoint triplets.
        keypoint_score_thr: rescoring threshold (0.2).
        nms_thr: OKS-NMS threshold (0.9) or None for no NMS.

    Returns:
        ``{"AP", "AP50", ..., "ARl"}`` of the whole body (the headline, fractions), plus
        ``"groups"``: ``{"body": {...}, "foot": ..., "face": ..., "left_hand": ..., "right_hand": ...,
        "wholebody": {...}}`` with the same ten numbers each, and ``"num_instances"`` (after NMS).
    """
    meta = _meta()
    sig = meta.sigmas
    instances = score_and_nms(
        predictions, sigmas=sig, keypoint_score_thr=keypoint_score_thr, nms_thr=nms_thr
    )
    parsed_gt = parse_ground_truth(gt, kpt_key=kpt_key, num_keypoints=sig.size)
    body = list(meta.groups["body"])
    if instances:
        kps = np.stack([inst["keypoints"] for inst in instances])
    else:
        kps = np.zeros((0, sig.size, 2))
    dt = KeypointDetections(
        image=np.asarray([inst["image_id"] for inst in instances], dtype=np.int64),
        category=np.asarray([inst["category_id"] for inst in instances], dtype=np.int64),
        score=np.asarray([inst["score"] for inst in instances], dtype=np.float64),
        area=keypoint_extent_area(kps[:, body]),
        keypoints=kps,
    )
    for name, values, known in (
        ("image_id", dt.image, parsed_gt.image_ids),
        ("category_id", dt.category, parsed_gt.category_ids),
    ):
        bad = ~np.isin(values, known)
        if bad.any():
            raise ValueError(
                f"prediction {name} {int(values[np.flatnonzero(bad)[0]])} is not in the ground truth"
            )
    tables: dict[str, dict[str, float]] = {}
    for g in GROUPS:
        idx = list(meta.groups[g])
        tables[g] = evaluate_parsed(
            parsed_gt.select_keypoints(idx), dt.select_keypoints(idx), sig[idx]
        )
    tables["wholebody"] = evaluate_parsed(parsed_gt, dt, sig)
    return {**tables["wholebody"], "groups": tables, "num_instances": len(instances)}


def pck_by_annotation(
    gt: dict,
    predictions: Sequence[Mapping[str, Any]],
    *,
    kpt_key: str = "goliath_wholebody_kpts",
    threshold: float = 0.1,
) -> dict[str, float]:
    """PCK of top-down predictions on ground-truth boxes: the fraction of labelled keypoints
    (v > 0) predicted within ``threshold`` x the longer side of the annotation's box.

    A dense, unthresholded-by-OKS signal that still moves when a weak model's AP is 0. Predictions
    are matched to annotations by their ``id`` (the annotation id); those without one are skipped.

    Returns:
        ``{"PCK@0.1": all 308 keypoints, "PCK@0.1 body": the 17 body keypoints}`` (for the
        default threshold; fractions), NaN when nothing could be matched.
    """
    anns = {a["id"]: a for a in gt["annotations"]}
    in_body = np.zeros(_meta().sigmas.size, bool)
    in_body[list(_meta().groups["body"])] = True
    hits = np.zeros(2)
    total = np.zeros(2)
    for pred in predictions:
        ann = anns.get(pred.get("id"))
        if ann is None:
            continue
        ref = np.asarray(ann[kpt_key], dtype=np.float64).reshape(-1, 3)
        kp = _np(pred["keypoints"])[:, :2].astype(np.float64)
        labelled = ref[:, 2] > 0
        size = max(float(ann["bbox"][2]), float(ann["bbox"][3]), 1.0)
        close = np.linalg.norm(kp - ref[:, :2], axis=1) < threshold * size
        for j, sel in enumerate((labelled, labelled & in_body)):
            hits[j] += (close & sel).sum()
            total[j] += sel.sum()
    pck = np.where(total > 0, hits / np.maximum(total, 1), np.nan)
    name = f"PCK@{threshold:g}"
    return {name: float(pck[0]), f"{name} body": float(pck[1])}


class Keypoints308Metric:
    """Accumulator for ``evaluate_keypoints308``: collects predictions, evaluates on ``compute()``.

    Args:
        gt: the COCO-format ground truth (see ``evaluate_keypoints308``).
        pck: also report :func:`pck_by_annotation` (predictions on ground-truth boxes whose
            ``id`` is the annotation id, as the evaluation of top-down models makes them).
        **kwargs: forwarded to ``evaluate_keypoints308``.

    ``update(predictions)`` appends per-instance prediction dicts; ``sync()`` gathers the
    predictions of all ranks (``all_gather_object``, exact) so ``compute()`` on any rank sees all.
    The gathered list is in rank order; the result depends on the order only where the protocol
    does: which of several *different* predictions with the same ``id`` is kept (the first), and
    ties in score.
    """

    def __init__(self, gt: dict, *, pck: bool = False, **kwargs: Any) -> None:
        self.gt = gt
        self.pck = pck
        self.kwargs = kwargs
        self.reset()

    def reset(self) -> None:
        self._local: list[dict[str, Any]] = []
        self._global: list[dict[str, Any]] | None = None

    def update(self, predictions: Sequence[Mapping[str, Any]]) -> None:
        """Add per-instance predictions (dicts as accepted by ``score_and_nms``)."""
        self._global = None
        for pred in predictions:
            self._local.append(
                {
                    k: (_np(v) if k in ("keypoints", "keypoint_scores") else v)
                    for k, v in pred.items()
                }
            )

    def sync(self, group: Any = None) -> Keypoints308Metric:
        """Gather predictions from every rank (collective). Returns ``self``."""
        gathered = all_gather_objects(self._local, group)
        self._global = [p for part in gathered for p in part]
        return self

    all_reduce = sync

    def compute(self) -> dict[str, Any]:
        preds = self._global if self._global is not None else self._local
        out = evaluate_keypoints308(self.gt, preds, **self.kwargs)
        if self.pck:
            kpt_key = self.kwargs.get("kpt_key", "goliath_wholebody_kpts")
            out.update(pck_by_annotation(self.gt, preds, kpt_key=kpt_key))
        return out
