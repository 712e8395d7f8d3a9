"""Machine-readable pose outputs: the official predictions JSON schema and COCO-style results."""

from __future__ import annotations

import numpy as np

from sapiens2.inference.results import PoseResult


def _round(a: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def pose_frame_record(result: PoseResult, image_name: str) -> dict:
    """One ``frames`` entry of the official ``<label>_predictions.json``:
    ``{image_name, image_size, instances: [{bbox, bbox_score, keypoints [[x, y] x 308],
    keypoint_scores [308]}]}`` (``image_size`` and ``bbox_score`` are additions)."""
    instances = [
        {
            "bbox": _round(box, 2),
            "bbox_score": round(float(bs), 4),
            "keypoints": _round(kp),
            "keypoint_scores": _round(sc, 4),
        }
        for box, bs, kp, sc in zip(
            result.boxes, result.box_scores, result.keypoints, result.scores, strict=True
        )
    ]
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


def coco_results(
    result: PoseResult, image_id: int, image_name: str, kpt_thr: float = 0.3
) -> list[dict]:
    """COCO keypoint-detection results (one dict per person, 308 keypoints as ``[x, y, score] * 308``).

    ``bbox`` is ``[x, y, w, h]``; ``score`` is the box score times the mean score of the keypoints
    above ``kpt_thr`` (0 when none is).
    """
    out = []
    for box, bs, kp, sc in zip(
        result.boxes, result.box_scores, result.keypoints, result.scores, strict=True
    ):
        above = sc[sc > kpt_thr]
        score = float(bs) * (float(above.mean()) if above.size else 0.0)
        flat = np.concatenate([kp, sc[:, None]], axis=1).reshape(-1)
        out.append(
            {
                "image_id": image_id,
                "image_name": image_name,
                "category_id": 1,
                "bbox": _round([box[0], box[1], box[2] - box[0], box[3] - box[1]], 2),
                "score": round(score, 5),
                "keypoints": _round(flat),
            }
        )
    return out
