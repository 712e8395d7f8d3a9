"""OpenPose JSON (``<name>_keypoints.json``) from the 308 keypoints, for tools that read OpenPose
output (ControlNet / ComfyUI pose editors, OpenPose-based pipelines).

One file per image: ``{"version": 1.3, "canvas_width", "canvas_height", "people": [{"person_id":
[-1], "pose_keypoints_2d": BODY_25, "face_keypoints_2d": 70, "hand_left_keypoints_2d": 21,
"hand_right_keypoints_2d": 21, and the empty 3-D lists}]}``, each list ``[x, y, c] * K`` in image
pixels. As OpenPose does, a point that is not detected is ``0, 0, 0``: here every point without a
308 counterpart, and every point whose score is below ``kpt_thr`` or that lies outside the image.
Confidences are the heatmap scores clipped to [0, 1].

Each OpenPose point is one 308 keypoint, or the mean of several (BODY_25's neck and mid-hip are
the midpoints of the shoulders and hips, as OpenPose defines them; its score is the lowest of
theirs). The correspondence is by name (docs/formats.md has the tables):

- BODY_25: all 25 points.
- hands: OpenPose's 21 points per hand are COCO-WholeBody's; the official COCO-WholeBody mapping
  gives 15 finger joints per hand, the wrist is the root, and each finger's ``*_third_joint``
  (the knuckle; the thumb's is its base) fills the remaining five.
- face: 22 of OpenPose's 70 (the 68 iBUG-300W landmarks and the two pupils) have a named
  counterpart among the 238 face points: chin, eyebrow ends, nose root, tip and base, eye corners,
  mouth corners and lip centres, pupils. The other 48 (jaw line, eyebrow and eyelid arcs, nostril
  curve, lip arcs) are left 0.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from sapiens2.data.metadata import keypoints308

OPENPOSE_VERSION = 1.3

BODY25_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
    "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
)  # fmt: skip

# BODY_25 point -> 308 names (several: their mean)
_BODY25 = (
    ("nose",), ("left_shoulder", "right_shoulder"), ("right_shoulder",), ("right_elbow",),
    ("right_wrist",), ("left_shoulder",), ("left_elbow",), ("left_wrist",),
    ("left_hip", "right_hip"), ("right_hip",), ("right_knee",), ("right_ankle",), ("left_hip",),
    ("left_knee",), ("left_ankle",), ("right_eye",), ("left_eye",), ("right_ear",),
    ("left_ear",), ("left_big_toe",), ("left_small_toe",), ("left_heel",), ("right_big_toe",),
    ("right_small_toe",), ("right_heel",),
)  # fmt: skip

_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


def _hand(side: str) -> tuple[tuple[str, ...], ...]:
    """OpenPose / COCO-WholeBody hand order: wrist, then per finger base .. tip."""
    names = [(f"{side}_wrist",)]
    for finger in _FINGERS:
        names += [(f"{side}_{finger}_third_joint",)]
        names += [(f"{side}_{finger}{k}",) for k in (2, 3, 4)]
    return tuple(names)


def _corner(side: str, end: str) -> tuple[str, str]:
    """An eye corner: where the upper and lower lash lines meet."""
    return (f"{side}_{end}_end_of_upper_lash_line", f"{side}_{end}_end_of_lower_lash_line")


# OpenPose face point (iBUG-300W 0..67, pupils 68, 69) -> 308 names; r_/l_ are the person's sides
_FACE70: dict[int, tuple[str, ...]] = {
    8: ("tip_of_chin",),
    17: ("end_of_r_eyebrow",),
    21: ("upper_startpoint_of_r_eyebrow", "lower_startpoint_of_r_eyebrow"),
    22: ("upper_startpoint_of_l_eyebrow", "lower_startpoint_of_l_eyebrow"),
    26: ("end_of_l_eyebrow",),
    27: ("center_of_nose_root",),
    30: ("tip_of_nose",),
    33: ("bottom_center_of_nose",),
    36: _corner("r", "outer"),
    39: _corner("r", "inner"),
    42: _corner("l", "inner"),
    45: _corner("l", "outer"),
    48: ("r_outer_corner_of_mouth",),
    51: ("center_of_cupid_bow",),
    54: ("l_outer_corner_of_mouth",),
    57: ("center_of_lower_outer_lip",),
    60: ("r_inner_corner_of_mouth",),
    62: ("center_of_upper_inner_lip",),
    64: ("l_inner_corner_of_mouth",),
    66: ("center_of_lower_inner_lip",),
    68: ("r_center_of_pupil",),
    69: ("l_center_of_pupil",),
}

PARTS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")  # fmt: skip


@cache
def openpose_mapping() -> dict[str, tuple[tuple[int, ...], ...]]:
    """For each OpenPose list (:data:`PARTS`), per point the 308 indices it is the mean of
    (empty: no counterpart, written as 0)."""
    meta = keypoints308()

    def idx(groups) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(meta.index(n) for n in g) for g in groups)

    face = tuple(_FACE70.get(i, ()) for i in range(70))
    return {
        "pose_keypoints_2d": idx(_BODY25),
        "face_keypoints_2d": idx(face),
        "hand_left_keypoints_2d": idx(_hand("left")),
        "hand_right_keypoints_2d": idx(_hand("right")),
    }


def to_openpose(
    keypoints: np.ndarray, scores: np.ndarray, image_size: tuple[int, int], kpt_thr: float = 0.3
) -> dict[str, np.ndarray]:
    """The OpenPose lists of ``(N, 308, 2)`` keypoints and ``(N, 308)`` scores as ``(N, K, 3)``
    float64 ``[x, y, c]`` arrays (see the module docstring for what is 0)."""
    from sapiens2.data.geometry import keypoints_in_image

    kp = np.asarray(keypoints, np.float64)
    sc = np.asarray(scores, np.float64)
    ok = keypoints_in_image(kp, image_size) & np.isfinite(sc) & (sc >= kpt_thr)
    out = {}
    for part, groups in openpose_mapping().items():
        arr = np.zeros((kp.shape[0], len(groups), 3))
        for j, g in enumerate(groups):
            if not g:
                continue
            g = list(g)
            have = ok[:, g].all(axis=1)
            arr[have, j, :2] = kp[have][:, g].mean(axis=1)
            arr[have, j, 2] = np.clip(sc[have][:, g].min(axis=1), 0.0, 1.0)
        out[part] = arr
    return out


def openpose_json(result, kpt_thr: float = 0.3, digits: int = 3) -> dict:
    """The OpenPose file of one image's :class:`~sapiens2.inference.results.PoseResult`."""
    h, w = result.image_size
    parts = to_openpose(result.keypoints, result.scores, result.image_size, kpt_thr)
    people = []
    for i in range(result.num_people):
        person: dict = {"person_id": [-1]}
        for part in PARTS:
            person[part] = np.round(parts[part][i], digits).reshape(-1).tolist()
        for part in PARTS:
            person[part.replace("_2d", "_3d")] = []
        people.append(person)
    return {"version": OPENPOSE_VERSION, "canvas_width": int(w), "canvas_height": int(h), "people": people}  # fmt: skip
