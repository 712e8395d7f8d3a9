"""Analytic ray casting of ellipsoids, capsules and boxes in numpy.

Every primitive lives in its own local frame: ``p_world = center + rot @ p_local``.

* ellipsoid: centred at the local origin, semi-axes ``size = (ax, ay, az)``;
* capsule: segment from the local origin along local +z of length ``size[1]``, radius ``size[0]``;
* box: centred at the local origin, half extents ``size``.

Rays are ``origin + t * direction``; directions need not be unit length, so with camera rays
``((u - cx) / fx, (v - cy) / fy, 1)`` the hit parameter ``t`` is the depth ``Z`` directly.
All functions work on flat arrays of (ray, primitive) pairs so that one numpy pass handles every
pixel a primitive may cover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ELLIPSOID, CAPSULE, BOX = 0, 1, 2


@dataclass
class Primitives:
    """A struct of arrays describing P primitives (any frame; usually world or camera).

    Attributes:
        kind: (P,) int, ELLIPSOID / CAPSULE / BOX.
        center: (P, 3) float, local origin in the frame.
        rot: (P, 3, 3) float, columns are the local axes expressed in the frame.
        size: (P, 3) float, see the module docstring.
        part: (P,) int, body-part code (see ``body.PART_NAMES``).
        person: (P,) int, index of the person the primitive belongs to.
    """

    kind: np.ndarray
    center: np.ndarray
    rot: np.ndarray
    size: np.ndarray
    part: np.ndarray
    person: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def transformed(self, rot: np.ndarray, trans: np.ndarray) -> Primitives:
        """Applies ``x -> rot @ x + trans`` (rot (3,3), trans (3,)) to every primitive."""
        return Primitives(
            kind=self.kind,
            center=self.center @ rot.T + trans,
            rot=np.einsum("ij,pjk->pik", rot, self.rot),
            size=self.size,
            part=self.part,
            person=self.person,
        )

    def subset(self, index: np.ndarray) -> Primitives:
        """The primitives at ``index`` (int array)."""
        return Primitives(*(getattr(self, f)[index] for f in _FIELDS))

    @staticmethod
    def concatenate(items: list[Primitives]) -> Primitives:
        """All primitives of ``items``, in order."""
        return Primitives(
            *(np.concatenate([getattr(p, f) for p in items]) for f in _FIELDS),
        )

    def bounding_spheres(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns centres (P, 3) and radii (P,) of spheres enclosing each primitive."""
        centre = self.center.copy()
        radius = np.zeros(len(self))
        ell = self.kind == ELLIPSOID
        radius[ell] = self.size[ell].max(axis=1)
        cap = self.kind == CAPSULE
        half = self.size[cap, 1] / 2
        centre[cap] = self.center[cap] + self.rot[cap, :, 2] * half[:, None]
        radius[cap] = half + self.size[cap, 0]
        box = self.kind == BOX
        radius[box] = np.linalg.norm(self.size[box], axis=1)
        return centre, radius


_FIELDS = ("kind", "center", "rot", "size", "part", "person")


@dataclass
class Hits:
    """Result of intersecting N (ray, primitive) pairs. Misses have ``t = inf``.

    Attributes:
        t: (N,) ray parameter of the entry point.
        local: (N, 3) entry point in the primitive's local frame.
        normal: (N, 3) unit outward normal in the rays' frame.
    """

    t: np.ndarray
    local: np.ndarray
    normal: np.ndarray


def _sphere_entry(o: np.ndarray, d: np.ndarray, r: np.ndarray | float) -> np.ndarray:
    """Entry parameter of rays o + t d (N,3) into spheres at the origin of radius r, inf if none."""
    a = np.einsum("ij,ij->i", d, d)
    b = np.einsum("ij,ij->i", o, d)
    c = np.einsum("ij,ij->i", o, o) - np.square(r)
    disc = b * b - a * c
    ok = disc >= 0
    t = np.full(o.shape[0], np.inf)
    t[ok] = (-b[ok] - np.sqrt(disc[ok])) / a[ok]
    t[t <= 0] = np.inf  # entry behind the origin: the origin is inside or the sphere is behind
    return t


def intersect(prims: Primitives, index: np.ndarray, origins: np.ndarray, dirs: np.ndarray) -> Hits:
    """Intersects ray i with primitive ``index[i]``.

    Args:
        prims: the primitives, in the same frame as the rays.
        index: (N,) int primitive index per ray.
        origins: (N, 3) or (3,) ray origins.
        dirs: (N, 3) ray directions (any positive length).

    Returns:
        Hits for the N pairs (entry points only; origins inside a primitive count as misses).
    """
    n = index.shape[0]
    origins = np.broadcast_to(origins, (n, 3))
    rot = prims.rot[index]
    # Ray in the local frame: R^T (o - c), R^T d.
    o = np.einsum("nji,nj->ni", rot, origins - prims.center[index])
    d = np.einsum("nji,nj->ni", rot, dirs)
    size = prims.size[index]
    kind = prims.kind[index]
    t = np.full(n, np.inf)
    local = np.zeros((n, 3))
    nloc = np.zeros((n, 3))

    sel = np.flatnonzero(kind == ELLIPSOID)
    if sel.size:
        ax = size[sel]
        os_, ds = o[sel] / ax, d[sel] / ax
        ts = _sphere_entry(os_, ds, 1.0)
        hit = np.isfinite(ts)
        p = o[sel] + ts[:, None] * d[sel]
        p[~hit] = 0
        t[sel] = ts
        local[sel] = p
        nloc[sel] = p / ax**2

    sel = np.flatnonzero(kind == CAPSULE)
    if sel.size:
        r, length = size[sel, 0], size[sel, 1]
        oc, dc = o[sel], d[sel]
        # Side of the infinite cylinder x^2 + y^2 = r^2, kept where 0 <= z <= length.
        a = dc[:, 0] ** 2 + dc[:, 1] ** 2
        b = oc[:, 0] * dc[:, 0] + oc[:, 1] * dc[:, 1]
        c = oc[:, 0] ** 2 + oc[:, 1] ** 2 - r**2
        disc = b * b - a * c
        ok = (disc >= 0) & (a > 1e-18)
        t_side = np.full(sel.size, np.inf)
        t_side[ok] = (-b[ok] - np.sqrt(disc[ok])) / a[ok]
        z_side = oc[:, 2] + t_side * dc[:, 2]
        t_side[~((z_side >= 0) & (z_side <= length) & (t_side > 0))] = np.inf
        t0 = _sphere_entry(oc, dc, r)
        end = np.zeros_like(oc)
        end[:, 2] = length
        t1 = _sphere_entry(oc - end, dc, r)
        stack = np.stack([t_side, t0, t1], axis=1)
        which = np.argmin(stack, axis=1)
        ts = stack[np.arange(sel.size), which]
        hit = np.isfinite(ts)
        p = oc + np.where(hit, ts, 0)[:, None] * dc
        axis_pt = np.zeros_like(p)
        axis_pt[:, 2] = np.where(which == 0, p[:, 2], np.where(which == 1, 0.0, length))
        t[sel] = ts
        local[sel] = p
        nloc[sel] = p - axis_pt

    sel = np.flatnonzero(kind == BOX)
    if sel.size:
        half = size[sel]
        ob, db = o[sel], d[sel]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / db
            ta = (-half - ob) * inv
            tb = (half - ob) * inv
        tmin = np.fmin(ta, tb)
        tmax = np.fmax(ta, tb)
        tmin = np.where(np.isnan(tmin), -np.inf, tmin)
        tmax = np.where(np.isnan(tmax), np.inf, tmax)
        axis = np.argmax(tmin, axis=1)
        tn = tmin[np.arange(sel.size), axis]
        tf = tmax.min(axis=1)
        hit = (tn <= tf) & (tn > 0)
        ts = np.where(hit, tn, np.inf)
        p = ob + np.where(hit, ts, 0)[:, None] * db
        nb = np.zeros_like(p)
        nb[np.arange(sel.size), axis] = np.sign(p[np.arange(sel.size), axis])
        t[sel] = ts
        local[sel] = p
        nloc[sel] = nb

    normal = np.einsum("nij,nj->ni", rot, nloc)
    norm = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = normal / np.where(norm > 0, norm, 1.0)
    return Hits(t=t, local=local, normal=normal)


def contains(
    prims: Primitives, index: np.ndarray, points: np.ndarray, tol: float = 0.0
) -> np.ndarray:
    """(N,) bool: is ``points[i]`` (N,3) inside primitive ``index[i]`` (grown by ``tol`` metres)."""
    rot = prims.rot[index]
    p = np.einsum("nji,nj->ni", rot, points - prims.center[index])
    size = prims.size[index]
    kind = prims.kind[index]
    out = np.zeros(index.shape[0], dtype=bool)
    e = kind == ELLIPSOID
    out[e] = np.sum((p[e] / (size[e] + tol)) ** 2, axis=1) <= 1.0
    c = kind == CAPSULE
    z = np.clip(p[c, 2], 0, size[c, 1])
    out[c] = np.hypot(p[c, 0], p[c, 1]) ** 2 + (p[c, 2] - z) ** 2 <= (size[c, 0] + tol) ** 2
    b = kind == BOX
    out[b] = np.all(np.abs(p[b]) <= size[b] + tol, axis=1)
    return out


def screen_boxes(prims: Primitives, K: np.ndarray, h: int, w: int) -> np.ndarray:
    """Conservative pixel boxes of camera-frame primitives.

    Args:
        prims: primitives in the OpenCV camera frame.
        K: (3, 3) intrinsics.
        h: image height.
        w: image width.

    Returns:
        (P, 4) int inclusive boxes ``x0, y0, x1, y1`` clipped to the image (empty when x1 < x0).
    """
    c, r = prims.bounding_spheres()
    # Capsules: union of the boxes of the two end spheres (much tighter for long limbs).
    cap = prims.kind == CAPSULE
    ends = np.stack([prims.center, prims.center], axis=1)
    rad = np.stack([r, r], axis=1)
    ends[~cap] = c[~cap, None, :]
    ends[cap, 1] = prims.center[cap] + prims.rot[cap, :, 2] * prims.size[cap, 1:2]
    rad[cap] = prims.size[cap, 0:1]
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    corners = (ends[:, :, None, :] + rad[:, :, None, None] * signs).reshape(len(prims), 16, 3)
    z = corners[..., 2]
    near = (z <= 1e-3).any(axis=1)
    zs = np.maximum(z, 1e-3)
    u = K[0, 0] * corners[..., 0] / zs + K[0, 2]
    v = K[1, 1] * corners[..., 1] / zs + K[1, 2]
    box = np.stack(
        [np.floor(u.min(1)), np.floor(v.min(1)), np.ceil(u.max(1)), np.ceil(v.max(1))], 1
    )
    box[near] = [0, 0, w - 1, h - 1]
    box = np.clip(box, [0, 0, -1, -1], [w, h, w - 1, h - 1]).astype(np.int64)
    box[(c[:, 2] + r) <= 1e-3] = [1, 1, 0, 0]
    return box


def cast_nearest(
    prims: Primitives, origins: np.ndarray, dirs: np.ndarray, pairs: tuple | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of R rays against all primitives (or the given candidate pairs).

    Args:
        prims: primitives in the rays' frame.
        origins: (R, 3) or (3,).
        dirs: (R, 3).
        pairs: optional ``(ray_index, prim_index)`` int arrays of the pairs worth testing
            (e.g. culled by screen boxes); default: every ray against every primitive.

    Returns:
        t (R,) nearest entry (inf on a miss) and the primitive index (R,) (-1 on a miss).
    """
    r = dirs.shape[0]
    if pairs is None:
        ray = np.repeat(np.arange(r), len(prims))
        idx = np.tile(np.arange(len(prims)), r)
    else:
        ray, idx = pairs
    tbest = np.full(r, np.inf)
    best = np.full(r, -1)
    if ray.size == 0:
        return tbest, best
    orig = np.broadcast_to(origins, (r, 3))[ray]
    t = intersect(prims, idx, orig, dirs[ray]).t
    order = np.lexsort((idx, t, ray))
    first = order[np.r_[True, ray[order][1:] != ray[order][:-1]]]
    tbest[ray[first]] = t[first]
    best[ray[first]] = np.where(np.isfinite(t[first]), idx[first], -1)
    return tbest, best
