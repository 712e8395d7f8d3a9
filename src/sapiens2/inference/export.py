"""Machine-readable pose outputs: the official predictions JSON schema and COCO-style results."""

from __future__ import annotations

import numpy as np

from sapiens2.inference.results import PoseResult


def _round(a: np.ndarray, digits: int = 3) -> list:
    return np.round(_finite(a), digits).tolist()


def _finite(a) -> np.ndarray:
    """``a`` as float64 with NaN and infinities replaced by 0 (JSON has no NaN)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, 0.0)


def _valid_keypoints(kp: np.ndarray, sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``(K, 2)`` and scores ``(K,)`` with every point that has a non-finite coordinate
    or score set to (0, 0) with score 0, as points a layout lacks are."""
    kp, sc = np.asarray(kp, np.float64), np.asarray(sc, np.float64)
    bad = ~(np.isfinite(kp).all(axis=-1) & np.isfinite(sc))
    if bad.any():
        kp, sc = kp.copy(), sc.copy()
        kp[bad], sc[bad] = 0.0, 0.0
    return kp, sc


def pose_frame_record(result: PoseResult, image_name: str) -> dict:
    """One ``frames`` entry of the official ``<label>_predictions.json``:
    ``{image_name, image_size, instances: [{bbox, bbox_score, keypoints [[x, y] x 308],
    keypoint_scores [308], keypoints_outside_image}]}`` (``image_size``, ``bbox_score`` and
    ``keypoints_outside_image`` are additions).

    Keypoints outside the image are kept as predicted (the official tool writes them unchanged)
    and flagged: ``keypoints_outside_image`` lists their indices (see docs/formats.md). A keypoint
    with a NaN or infinite coordinate or score is written as (0, 0) with score 0.
    """
    inside = result.in_image()
    instances = []
    for box, bs, kp, sc, ok in zip(
        result.boxes, result.box_scores, result.keypoints, result.scores, inside, strict=True
    ):
        kp, sc = _valid_keypoints(kp, sc)
        instances.append(
            {
                "bbox": _round(box, 2),
                "bbox_score": round(float(_finite(bs)), 4),
                "keypoints": _round(kp),
                "keypoint_scores": _round(sc, 4),
                "keypoints_outside_image": np.flatnonzero(~ok).tolist(),
            }
        )
    return {"image_name": image_name, "image_size": list(result.image_size), "instances": instances}


def pose_predictions_json(
    frames: list[dict], *, video: str | None, kpt_thr: float, num_keypoints: int = 308
) -> dict:
    """The official predictions file: ``{video, image_size [H, W], num_keypoints, kpt_thr_used, frames}``
    (``image_size`` is the first frame's)."""
    size = frames[0]["image_size"] if frames else None
    return {
        "video": video,
        "image_size": size,
        "num_keypoints": num_keypoints,
        "kpt_thr_used": kpt_thr,
        "frames": frames,
    }


KEYPOINT_LAYOUTS = ("goliath308", "coco17", "coco_wholebody133")

#: The COCO-WholeBody results fields and their slices of the 133 keypoints, in the file's order
#: (what the WholeBody evaluators read: xtcocotools' ``keypoints_wholebody``, mmpose's metric).
WHOLEBODY_PARTS: dict[str, slice] = {
    "keypoints": slice(0, 17),  # body
    "foot_kpts": slice(17, 23),
    "face_kpts": slice(23, 91),
    "lefthand_kpts": slice(91, 112),
    "righthand_kpts": slice(112, 133),
}


def coco_results(
    result: PoseResult,
    image_id: int,
    image_name: str,
    kpt_thr: float = 0.3,
    layout: str = "goliath308",
) -> list[dict]:
    """COCO keypoint-detection results, one dict per person, keypoints as ``[x, y, score] * K``.

    Args:
        layout: ``"goliath308"`` (K = 308, the model's layout), ``"coco17"`` (K = 17) or
            ``"coco_wholebody133"`` (K = 133; points without a 308 counterpart are 0 with score 0),
            written as the COCO-WholeBody results are: split into the fields of
            :data:`WHOLEBODY_PARTS` (``keypoints`` then holds the 17 body points).

    ``bbox`` is ``[x, y, w, h]``; ``score`` is the box score times the mean score of the (layout's)
    keypoints above ``kpt_thr`` (0 when none is). Non-finite keypoints are written as (0, 0) with
    score 0.
    """
    if layout == "goliath308":
        keypoints, scores = result.keypoints, result.scores
    elif layout == "coco17":
        keypoints, scores = result.to_coco17()
    elif layout == "coco_wholebody133":
        keypoints, scores = result.to_coco_wholebody()
    else:
        raise ValueError(
            f"unknown keypoint layout {layout!r}; expected one of {', '.join(KEYPOINT_LAYOUTS)}"
        )
    out = []
    for box, bs, kp, sc in zip(result.boxes, result.box_scores, keypoints, scores, strict=True):
        kp, sc = _valid_keypoints(kp, sc)
        above = sc[sc > kpt_thr]
        score = float(_finite(bs)) * (float(above.mean()) if above.size else 0.0)
        triplets = np.concatenate([kp, sc[:, None]], axis=1)
        record = {
            "image_id": image_id,
            "image_name": image_name,
            "category_id": 1,
            "bbox": _round([box[0], box[1], box[2] - box[0], box[3] - box[1]], 2),
            "score": round(score, 5),
        }
        if layout == "coco_wholebody133":
            for name, part in WHOLEBODY_PARTS.items():
                record[name] = _round(triplets[part].reshape(-1))
        else:
            record["keypoints"] = _round(triplets.reshape(-1))
        out.append(record)
    return out
