"""Exact labels of a synthetic person: 308 keypoints with visibility, and 29-class part regions.

Keypoints come in two kinds:

* *internal* points (joint centres, finger joints and tips, toes, heel, neck) lie inside the
  primitives that "own" them (those containing the point). Such a point is visible when, along
  the camera ray through it, nothing is hit before the owners' own front surface.
* *surface* points (the 238 face points, the body nose/eyes/ears, acromion, olecranon,
  cubital fossa) lie on a primitive's surface. They are visible when nothing is hit more than
  ``SURFACE_EPS`` metres in front of the point (a point on the far side of the head is hidden by
  the head itself).

Face points are defined on a frontal template (head-local x, y in metres for a head of scale 1)
and projected along the head's -z axis onto the head/nose ellipsoids; ear points are projected
along -x (left) / +x (right) onto the ear ellipsoids. Only the person's right side and midline
are written out; every left-side point is the mirror image of its flip partner, so the template
is exactly consistent with the layout's ``flip_indices``.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.data.synth.body import (
    EAR_CENTER,
    EAR_SEMI,
    FINGERS,
    HEAD_SEMI,
    NOSE_CENTER,
    NOSE_SEMI,
    PART,
    Body,
)
from sapiens2.data.synth.primitives import Primitives, cast_nearest, contains, intersect

SURFACE_EPS = 0.006  # metres
NUM_KEYPOINTS = 308

# --- face template (head of scale 1, head-local metres; y up, face towards +z) --------------------
EYE_X, EYE_Y, EYE_HALF_W = 0.031, 0.018, 0.0135
IRIS_R, PUPIL_R = 0.0052, 0.0021
MOUTH_Y, MOUTH_HALF_W = -0.060, 0.025
# Bisection order of curve midpoints: midpoint_1 / _2 at the quarters, _3.._6 at the eighths.
_MID_T = {1: 0.25, 2: 0.75, 3: 0.125, 4: 0.375, 5: 0.625, 6: 0.875}


def _eye_curve(kind: str, t: np.ndarray | float) -> tuple:
    """Right-eye curve point for t in [0,1] from the outer corner (0) to the inner corner (1)."""
    t = np.asarray(t, dtype=float)
    x = -EYE_X - EYE_HALF_W * (1 - 2 * t)
    arc = np.sin(np.pi * t)
    y = {
        "upper_lash_line": EYE_Y + 0.0052 * arc,
        "upper_eyelid_line": EYE_Y + 0.0068 * arc,
        "upper_crease_line": EYE_Y + 0.0100 * arc + 0.001,
        "lower_lash_line": EYE_Y - 0.0036 * arc,
        "lower_eyelid_line": EYE_Y - 0.0052 * arc,
    }[kind]
    return x, y


def _brow(kind: str, t: float) -> tuple[float, float]:
    """Right eyebrow: t from the inner start (0) to the outer end (1)."""
    x = -0.012 - 0.034 * t
    base = EYE_Y + 0.016 + 0.006 * np.sin(np.pi * t * 0.9) - 0.004 * t
    return x, base + (0.0045 * (1 - 0.6 * t) if kind == "upper" else 0.0)


def _lip(kind: str, t: np.ndarray | float, opening: float = 0.0) -> tuple:
    """Lip curves for t in [0,1] from the right mouth corner (0) to the left one (1)."""
    t = np.asarray(t, dtype=float)
    inner = kind.startswith("inner")
    half = MOUTH_HALF_W * (0.9 if inner else 1.0)
    x = -half * (1 - 2 * t)
    arc = np.sin(np.pi * t)
    if kind == "upper_outer":
        bow = 1 - 0.3 * np.exp(-(((t - 0.5) / 0.07) ** 2))
        y = MOUTH_Y + opening / 2 * arc + 0.0085 * arc**0.7 * bow
    elif kind == "lower_outer":
        y = MOUTH_Y - opening / 2 * arc - 0.0105 * arc**0.8
    elif kind == "upper_inner":
        y = MOUTH_Y + opening / 2 * arc
    else:
        y = MOUTH_Y - opening / 2 * arc
    return x, y


_EAR = {  # left ear, (forward, up) in ear semi-axis units
    "top_end_of_inferior_crus": (0.30, 0.42), "top_end_of_superior_crus": (0.02, 0.70),
    "start_of_antihelix": (-0.08, 0.50), "end_of_antihelix": (-0.20, -0.45),
    "midpoint_1_of_antihelix": (-0.32, 0.28), "midpoint_1_of_inferior_crus": (0.12, 0.38),
    "midpoint_2_of_antihelix": (-0.42, 0.0), "midpoint_3_of_antihelix": (-0.36, -0.25),
    "highest_point_of_antitragus": (-0.02, -0.42), "bottom_point_of_tragus": (0.58, -0.28),
    "protruding_point_of_tragus": (0.72, -0.12), "top_point_of_tragus": (0.58, 0.05),
    "start_point_of_crus_of_helix": (0.35, 0.08), "deepest_point_of_concha": (0.12, -0.05),
    "tip_of_ear_lobe": (0.05, -0.93), "midpoint_between_22_15": (-0.35, -0.68),
    "bottom_connecting_point_of_ear_lobe": (0.45, -0.80),
    "top_connecting_point_of_helix": (0.55, 0.70),
}  # fmt: skip


def _ear_uv(role: str) -> tuple[float, float]:
    if role in _EAR:
        return _EAR[role]
    m = re.fullmatch(r"point_(\d)_of_inner_helix", role)
    if m is None:
        raise KeyError(f"no ear template for {role!r}")
    # Along the rim: from the front top, over the top, down the back towards the lobe.
    ang = np.radians(70 + (int(m.group(1)) - 1) * 170 / 7)
    return 0.86 * np.cos(ang), 0.86 * np.sin(ang)


def _frontal_xy(name: str, opening: float) -> tuple[float, float]:
    """(x, y) of a right-side or midline face point on the frontal template."""
    fixed = {
        "center_of_glabella": (0.0, EYE_Y + 0.014),
        "center_of_nose_root": (0.0, EYE_Y - 0.004),
        "midpoint_1_of_nose_bridge": (0.0, 0.008),
        "midpoint_2_of_nose_bridge": (0.0, 0.001),
        "midpoint_3_of_nose_bridge": (0.0, -0.006),
        "tip_of_nose_bridge": (0.0, -0.012),
        "tip_of_nose": (0.0, -0.020),
        "bottom_center_of_nose": (0.0, -0.0385),
        "r_outer_corner_of_nose": (-0.0145, -0.031),
        "inner_corner_of_r_nostril": (-0.003, -0.036),
        "outer_corner_of_r_nostril": (-0.0095, -0.034),
        "upper_corner_of_r_nostril": (-0.0065, -0.031),
        "center_of_labiomental_groove": (0.0, -0.083),
        "tip_of_chin": (0.0, -0.103),
        "r_outer_corner_of_mouth": (-MOUTH_HALF_W, MOUTH_Y),
        "r_inner_corner_of_mouth": (-0.9 * MOUTH_HALF_W, MOUTH_Y),
    }
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"(?:center|midpoint_(\d))_of_(upper|lower)_(outer|inner)_lip", name)
    if m:
        t = _MID_T[int(m.group(1))] if m.group(1) else 0.5
        x, y = _lip(f"{m.group(2)}_{m.group(3)}", t, opening)
        return float(x), float(y)
    if name == "center_of_cupid_bow":
        x, y = _lip("upper_outer", 0.5, opening)
        return float(x), float(y)
    m = re.fullmatch(r"r_(inner_end|outer_end|centerpoint|midpoint_(\d))_of_(\w+_line)", name)
    if m:
        role, curve = m.group(1), m.group(3)
        t = {"outer_end": 0.0, "inner_end": 1.0, "centerpoint": 0.5}.get(role)
        if t is None:
            t = _MID_T[int(m.group(2))]
        if curve == "upper_crease_line":
            t = 0.06 + 0.88 * t
        x, y = _eye_curve(curve, t)
        return float(x), float(y)
    m = re.fullmatch(r"(upper|lower)_(startpoint|midpoint_(\d))_of_r_eyebrow", name)
    if m:
        t = 0.0 if m.group(2) == "startpoint" else {1: 0.5, 2: 0.25, 3: 0.75}[int(m.group(3))]
        return _brow(m.group(1), t)
    if name == "end_of_r_eyebrow":
        return _brow("lower", 1.0)
    m = re.fullmatch(r"r_(center|border)_of_(iris|pupil)(?:_(\d+)|_midpoint_(\d))?", name)
    if m:
        r = IRIS_R if m.group(2) == "iris" else PUPIL_R
        if m.group(1) == "center":
            ang, r = 0.0, 0.0
        elif m.group(3):
            ang = {12: 90, 3: 0, 6: -90, 9: 180}[int(m.group(3))]
        else:
            ang = {1: 45, 2: -45, 3: -135, 4: 135}[int(m.group(4))]
        a = np.radians(ang)
        return -EYE_X + r * np.cos(a), EYE_Y + r * np.sin(a)
    raise KeyError(f"no face template for keypoint {name!r}")


def _head_surface_z(x: float, y: float) -> float:
    """Largest z of the head or nose ellipsoid at head-template (x, y) (projection along -z)."""
    zs = [0.0]
    q = 1 - (x / HEAD_SEMI[0]) ** 2 - (y / HEAD_SEMI[1]) ** 2
    if q > 0:
        zs.append(HEAD_SEMI[2] * np.sqrt(q))
    qn = 1 - ((x - NOSE_CENTER[0]) / NOSE_SEMI[0]) ** 2 - ((y - NOSE_CENTER[1]) / NOSE_SEMI[1]) ** 2
    if qn > 0:
        zs.append(NOSE_CENTER[2] + NOSE_SEMI[2] * np.sqrt(qn))
    return float(max(zs))


@cache
def face_template(opening: float = 0.0) -> np.ndarray:
    """(308, 3) head-local positions (head scale 1) of the face points; NaN for non-face rows."""
    meta = keypoints308()
    out = np.full((NUM_KEYPOINTS, 3), np.nan)
    left_defined = []
    for i, name in enumerate(meta.names):
        ear = re.fullmatch(r"([lr])_(.+)", name)
        if ear and i in range(220, 272):
            if ear.group(1) != "l":
                continue
            u, v = _ear_uv(ear.group(2))
            z = EAR_CENTER[2] + u * EAR_SEMI[2]
            y = EAR_CENTER[1] + v * EAR_SEMI[1]
            x = EAR_CENTER[0] + EAR_SEMI[0] * np.sqrt(max(1 - u * u - v * v, 0.0))
            out[i] = (x, y, z)
            left_defined.append(i)
            continue
        if i < 70 or i >= 308:
            continue
        try:
            x, y = _frontal_xy(name, opening)
        except KeyError:
            continue  # left-side point: filled from its flip partner below
        out[i] = (x, y, _head_surface_z(x, y))
    flip = meta.flip_indices
    for i in range(70, NUM_KEYPOINTS):
        if np.isnan(out[i, 0]):
            j = int(flip[i])
            if np.isnan(out[j, 0]):
                raise RuntimeError(f"face template misses {meta.names[i]} and its flip partner")
            out[i] = out[j] * np.array([-1.0, 1.0, 1.0])
    return out


@cache
def _surface_mask() -> np.ndarray:
    """(308,) bool: which keypoints are surface points (the rest are internal)."""
    meta = keypoints308()
    surf = np.zeros(NUM_KEYPOINTS, dtype=bool)
    surf[70:] = True
    for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_olecranon",
                 "right_olecranon", "left_cubital_fossa", "right_cubital_fossa",
                 "left_acromion", "right_acromion"):  # fmt: skip
        surf[meta.index(name)] = True
    return surf


def keypoints_3d(body: Body, prims: Primitives) -> np.ndarray:
    """(308, 3) world positions of all keypoints of one person.

    Args:
        body: the posed person.
        prims: that person's primitives (world frame), used for limb radii.
    """
    meta = keypoints308()
    out = np.full((NUM_KEYPOINTS, 3), np.nan)
    hc, hr, hk = body.head_frame()
    face = face_template(body.outfit["mouth_open"])
    sel = ~np.isnan(face[:, 0])
    out[sel] = hc + (face[sel] * hk) @ hr.T
    idx = meta.index
    out[idx("nose")] = out[idx("tip_of_nose")]
    out[idx("left_eye")] = out[idx("l_center_of_pupil")]
    out[idx("right_eye")] = out[idx("r_center_of_pupil")]
    out[idx("left_ear")] = out[idx("l_deepest_point_of_concha")]
    out[idx("right_ear")] = out[idx("r_deepest_point_of_concha")]
    out[idx("neck")] = body.joint("neck")[0]
    for side, word in (("l", "left"), ("r", "right")):
        for jn, kn in (("shoulder", "shoulder"), ("elbow", "elbow"), ("wrist", "wrist"),
                       ("hip", "hip"), ("knee", "knee"), ("ankle", "ankle")):  # fmt: skip
            out[idx(f"{word}_{kn}")] = body.joint(f"{jn}_{side}")[0]
        for f in FINGERS:
            for suffix in ("_third_joint", "2", "3", "4"):
                out[idx(f"{word}_{f}{suffix}")] = body.joint(f"{f}{suffix}_{side}")[0]
        # Foot points inside the foot ellipsoid (normalised ellipsoid coordinates).
        fp = np.flatnonzero(prims.part == PART[f"foot_{side}"])[0]
        sx = 1.0 if side == "l" else -1.0
        for kn, q in (("big_toe", (-0.35 * sx, -0.2, 0.85)), ("small_toe", (0.55 * sx, -0.3, 0.65)),
                      ("heel", (0.0, -0.3, -0.85))):  # fmt: skip
            out[idx(f"{word}_{kn}")] = prims.center[fp] + prims.rot[fp] @ (
                np.array(q) * prims.size[fp]
            )
        # Elbow and shoulder surface points on the upper-arm capsule.
        ua = np.flatnonzero(prims.part == PART[f"upper_arm_{side}"])[0]
        r_ua = prims.size[ua, 0]
        ps, rs = body.joint(f"shoulder_{side}")
        pe, _ = body.joint(f"elbow_{side}")
        _, rc = body.joint("chest")
        out[idx(f"{word}_acromion")] = ps + rc[:, 1] * r_ua
        out[idx(f"{word}_olecranon")] = pe - rs[:, 2] * r_ua
        out[idx(f"{word}_cubital_fossa")] = pe + rs[:, 2] * r_ua
    if np.isnan(out).any():
        missing = [meta.names[i] for i in np.flatnonzero(np.isnan(out[:, 0]))]
        raise RuntimeError(f"keypoints without a 3D position: {missing[:5]}")
    return out


def keypoint_visibility(
    points: np.ndarray,
    person: int,
    prims: Primitives,
    K: np.ndarray,
    size: tuple[int, int],
    boxes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Projects camera-frame keypoints and decides visibility from depth order.

    Args:
        points: (308, 3) camera-frame (OpenCV) keypoints of one person.
        person: that person's index in ``prims.person``.
        prims: all primitives of the scene in the camera frame.
        K: (3, 3) intrinsics.
        size: (H, W).
        boxes: optional (P, 4) screen boxes of ``prims`` (``screen_boxes``) to cull ray tests.

    Returns:
        kpts (308, 3) rows ``(x, y, v)`` with v 0 (outside the image / behind the camera),
        1 (occluded) or 2 (visible); and the reference depth (308,) the test compared against
        (the depth of the owner surface along the ray, NaN where v = 0).
    """
    h, w = size
    z = points[:, 2]
    front = z > 1e-3
    zs = np.where(front, z, 1.0)
    u = K[0, 0] * points[:, 0] / zs + K[0, 2]
    v = K[1, 1] * points[:, 1] / zs + K[1, 2]
    # Labelled only within the hull of the pixel centres, [0, W-1] x [0, H-1].
    inside = front & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    dirs = np.stack([points[:, 0] / zs, points[:, 1] / zs, np.ones_like(zs)], axis=1)
    pairs = None
    if boxes is not None:
        ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
        cover = (
            (ui[:, None] >= boxes[None, :, 0] - 1)
            & (ui[:, None] <= boxes[None, :, 2] + 1)
            & (vi[:, None] >= boxes[None, :, 1] - 1)
            & (vi[:, None] <= boxes[None, :, 3] + 1)
            & inside[:, None]
        )
        pairs = np.nonzero(cover)
    t_all, _ = cast_nearest(prims, np.zeros(3), dirs, pairs)
    ref = z.copy()
    internal = ~_surface_mask()
    own = np.flatnonzero(prims.person == person)
    ks = np.flatnonzero(internal & inside)
    kk = np.repeat(ks, own.size)
    pp = np.tile(own, ks.size)
    inn = contains(prims, pp, points[kk], tol=1e-6)
    kk, pp = kk[inn], pp[inn]
    if kk.size:
        hits = intersect(prims, pp, np.zeros(3), dirs[kk])
        entry = np.full(NUM_KEYPOINTS, np.inf)
        np.minimum.at(entry, kk, hits.t)
        ref = np.minimum(ref, entry)
    visible = np.where(internal, t_all >= ref - 1e-6, t_all >= z - SURFACE_EPS)
    vis = np.where(inside, np.where(visible, 2, 1), 0)
    kpts = np.stack([np.where(inside, u, 0.0), np.where(inside, v, 0.0), vis], axis=1)
    return kpts, np.where(inside, ref, np.nan)


# --- part classes and materials -------------------------------------------------------------------
SKIN, SHIRT, PANTS, SHOE, SOCK, HAIR, LIP, SCLERA, IRIS, PUPIL, BROW, GLASSES, HAT, MOUTH = range(
    14
)
NUM_MATERIALS = 14


@cache
def _cls() -> dict[str, int]:
    return {n: i for i, n in enumerate(seg29().names)}


def part_regions(
    part: np.ndarray, local: np.ndarray, size: np.ndarray, outfit: dict, head_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """29-class label and material of surface points of one person.

    Args:
        part: (N,) part codes of the hit primitives.
        local: (N, 3) hit points in the primitives' local frames.
        size: (N, 3) primitive sizes.
        outfit: the person's outfit dict.
        head_scale: metres per head-template unit.

    Returns:
        cls (N,) uint8 in 1..28 and material (N,) int in ``range(NUM_MATERIALS)``.
    """
    c = _cls()
    n = part.shape[0]
    cls = np.full(n, c["Face_Neck"], dtype=np.uint8)
    mat = np.full(n, SKIN, dtype=np.int64)
    s = np.divide(local[:, 2], size[:, 1], out=np.zeros(n), where=size[:, 1] > 0)  # capsule axis

    def put(sel, name, m):
        cls[sel] = c[name]
        mat[sel] = m

    P = PART
    put(part == P["hair"], "Hair", HAIR)
    put(part == P["hat"], "Apparel", HAT)
    put(part == P["glasses"], "Eyeglass", GLASSES)
    for name in ("chest", "abdomen"):
        sel = part == P[name]
        qy = local[:, 1] / np.maximum(size[:, 1], 1e-9)
        shirt = np.full(n, bool(outfit["shirt"]))
        if name == "abdomen":
            shirt &= qy > outfit["shirt_bottom"]
        put(sel & shirt, "Upper_Clothing", SHIRT)
        put(sel & ~shirt, "Torso", SKIN)
    put(part == P["pelvis"], "Lower_Clothing", PANTS)
    for side, word in (("l", "Left"), ("r", "Right")):
        sel = part == P[f"upper_arm_{side}"]
        sleeve = outfit["sleeve"] if outfit["shirt"] else 0.0
        cov = (s < sleeve) & (sleeve > 0)
        put(sel & cov, "Upper_Clothing", SHIRT)
        put(sel & ~cov, f"{word}_Upper_Arm", SKIN)
        sel = part == P[f"forearm_{side}"]
        cov = (s < sleeve - 1) & (sleeve > 1)
        put(sel & cov, "Upper_Clothing", SHIRT)
        put(sel & ~cov, f"{word}_Lower_Arm", SKIN)
        put((part == P[f"palm_{side}"]) | (part == P[f"finger_{side}"]), f"{word}_Hand", SKIN)
        sel = part == P[f"thigh_{side}"]
        cov = s < outfit["pants"]
        put(sel & cov, "Lower_Clothing", PANTS)
        put(sel & ~cov, f"{word}_Upper_Leg", SKIN)
        sel = part == P[f"shin_{side}"]
        cov = s < outfit["pants"] - 1
        sock = ~cov & (s > 1 - outfit["socks"]) & (outfit["socks"] > 0)
        put(sel & cov, "Lower_Clothing", PANTS)
        put(sel & sock, f"{word}_Sock", SOCK)
        put(sel & ~cov & ~sock, f"{word}_Lower_Leg", SKIN)
        sel = part == P[f"foot_{side}"]
        if outfit["shoes"]:
            put(sel, f"{word}_Shoe", SHOE)
        elif outfit["socks"] > 0:
            put(sel, f"{word}_Sock", SOCK)
        else:
            put(sel, f"{word}_Foot", SKIN)
    head = np.flatnonzero(part == P["head"])
    if head.size:
        hc, hm = _head_regions(local[head] / head_scale, outfit)
        cls[head] = hc
        mat[head] = hm
    return cls, mat


def _head_regions(p: np.ndarray, outfit: dict) -> tuple[np.ndarray, np.ndarray]:
    """Labels/materials on the head ellipsoid at head-template points p (N, 3)."""
    c = _cls()
    q = p / HEAD_SEMI
    n = p.shape[0]
    cls = np.full(n, c["Face_Neck"], dtype=np.uint8)
    mat = np.full(n, SKIN, dtype=np.int64)
    x, y = p[:, 0], p[:, 1]
    front = q[:, 2] > 0
    # Eyes (both sides by symmetry in |x|).
    ax = np.abs(x)
    t = np.clip((ax - EYE_X + EYE_HALF_W) / (2 * EYE_HALF_W), 0, 1)  # 0 inner, 1 outer (mirrored)
    in_eye_x = np.abs(ax - EYE_X) < EYE_HALF_W
    _, yu = _eye_curve("upper_lash_line", 1 - t)
    _, yl = _eye_curve("lower_lash_line", 1 - t)
    eye = front & in_eye_x & (y < yu) & (y > yl)
    r = np.hypot(ax - EYE_X, y - EYE_Y)
    mat[eye] = SCLERA
    mat[eye & (r < IRIS_R)] = IRIS
    mat[eye & (r < PUPIL_R)] = PUPIL
    # Eyebrows.
    tb = np.clip((ax - 0.012) / 0.034, 0, 1)
    _, bu = _brow("upper", tb)
    _, bl = _brow("lower", tb)
    brow = front & (ax > 0.012) & (ax < 0.046) & (y < bu) & (y > bl)
    mat[brow] = BROW
    # Lips and mouth.
    op = outfit["mouth_open"]
    tl = np.clip((x + MOUTH_HALF_W) / (2 * MOUTH_HALF_W), 0, 1)
    in_mouth_x = np.abs(x) < MOUTH_HALF_W
    _, uo = _lip("upper_outer", tl, op)
    _, lo = _lip("lower_outer", tl, op)
    ti = np.clip((x + 0.9 * MOUTH_HALF_W) / (1.8 * MOUTH_HALF_W), 0, 1)
    _, ui = _lip("upper_inner", ti, op)
    _, li = _lip("lower_inner", ti, op)
    mid = MOUTH_Y
    upper = front & in_mouth_x & (y <= uo) & (y >= np.maximum(ui, mid))
    lower = front & in_mouth_x & (y >= lo) & (y <= np.minimum(li, mid))
    gap = front & (np.abs(x) < 0.9 * MOUTH_HALF_W) & (y < ui) & (y > li)
    cls[upper], mat[upper] = c["Upper_Lip"], LIP
    cls[lower], mat[lower] = c["Lower_Lip"], LIP
    mat[gap] = MOUTH
    # Hair: above the front hairline, or above a lower line at the back of the head.
    if not outfit["bald"]:
        w = np.clip((q[:, 2] + 0.1) / 0.4, 0, 1)  # 0 at the back, 1 at the front
        thresh = w * (outfit["hairline"] + 0.25 * np.abs(q[:, 0])) + (1 - w) * outfit["hair_back"]
        hair = q[:, 1] > thresh
        cls[hair], mat[hair] = c["Hair"], HAIR
    return cls, mat
