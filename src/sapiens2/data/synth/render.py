"""Scene sampling (people, camera, lights, colours, background) and rendering of one sample.

One ray per pixel through the pixel centre: pixel ``(row i, column j)`` has its centre at image
coordinates ``(u, v) = (j, i)`` (integer coordinates are pixel centres, as in OpenCV/COCO
keypoints), so the camera ray is ``((j - cx) / fx, (i - cy) / fy, 1)`` and the hit parameter is
the depth ``Z``. The camera frame is OpenCV's (x right, y down, z forward).

With ``SynthConfig.soft_edges`` (default) the pixels next to a person's outline (a 3x3
neighbourhood with person and background) also cast ``s x s`` sub-pixel rays: their coverage is
the alpha matte, the mean shaded colour of the sub-rays that hit a person is the foreground
colour, and the image there is the composite ``alpha * F + (1 - alpha) * B`` over the background,
so that person outlines are anti-aliased. Every other label keeps the one ray through the pixel
centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from sapiens2.data.synth.body import Body, body_primitives, sample_body
from sapiens2.data.synth.labels import (
    HAIR,
    IRIS,
    LIP,
    MOUTH,
    NUM_MATERIALS,
    PUPIL,
    SCLERA,
    SKIN,
    keypoint_visibility,
    keypoints_3d,
    part_regions,
)
from sapiens2.data.synth.primitives import CAPSULE, Primitives, intersect, screen_boxes


@dataclass(frozen=True)
class SynthConfig:
    """What to render.

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        people_max: at most this many people per image (at least one).
        noise: maximum standard deviation of the Gaussian sensor noise added to RGB (0-255 units).
        simple: a narrow distribution for quick checks of a training pipeline on a CPU: people
            face the camera (within 30 degrees), stand, walk, reach or raise their arms (no
            sitting, no random poses), are framed whole (no close-ups), wear plain colours and
            stand in front of a plain gradient. The labels are as exact as in the full
            distribution.
        soft_edges: anti-alias the person outlines (see the module docstring): the image is the
            composite of the supersampled foreground over the background there, and ``alpha``
            holds the coverage. Off: one ray per pixel everywhere and a binary alpha.
        edge_samples: s, the sub-pixel rays per side of an outline pixel (s x s rays).
    """

    height: int = 256
    width: int = 192
    people_max: int = 3
    noise: float = 3.0
    simple: bool = False
    soft_edges: bool = True
    edge_samples: int = 4

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"image size must be at least 16x16, got {self.height}x{self.width}")
        if self.people_max < 1:
            raise ValueError(f"people_max must be >= 1, got {self.people_max}")
        if not 1 <= self.edge_samples <= 16:
            raise ValueError(f"edge_samples must be in 1..16, got {self.edge_samples}")


@dataclass
class SynthSample:
    """One rendered sample with every label (numpy arrays, H x W images).

    Attributes:
        image: (H, W, 3) uint8 RGB, shaded (outlines anti-aliased with ``soft_edges``).
        mask: (H, W) uint8, 255 on people, 0 elsewhere (the pixel centre's ray).
        alpha: (H, W) float32 person coverage in [0, 1]: 1 inside people, 0 away from them,
            a multiple of 1/s² on the outline pixels (binary ``mask / 255`` without soft edges).
        foreground: (H, W, 3) float32 pre-multiplied person colour ``alpha * F`` in [0, 1]
            (F: the shaded colour before sensor noise), 0 where alpha is 0.
        background: (H, W, 3) uint8 RGB behind the people (before sensor noise); the image is
            ``rint(255 * foreground + (1 - alpha) * background + noise)``.
        seg: (H, W) uint8 29-class labels (0 = background).
        normal: (H, W, 3) float32 unit camera-frame normals (0 outside the mask).
        pointmap: (H, W, 3) float32 camera-frame XYZ in metres (0 outside the mask).
        albedo: (H, W, 3) uint8 RGB albedo (0 outside the mask).
        K: (3, 3) float64 intrinsics.
        instance: (H, W) int16 person index, -1 on background.
        primitive: (H, W) int32 primitive index, -1 on background.
        keypoints: (P, 308, 3) float64 rows (x, y, v) per person, in pixels.
        keypoints_cam: (P, 308, 3) camera-frame keypoints in metres.
        keypoint_ref_depth: (P, 308) depth of the owning surface used for visibility (NaN if v=0).
        prims: the scene primitives in the camera frame.
    """

    image: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray
    foreground: np.ndarray
    background: np.ndarray
    seg: np.ndarray
    normal: np.ndarray
    pointmap: np.ndarray
    albedo: np.ndarray
    K: np.ndarray
    instance: np.ndarray
    primitive: np.ndarray
    keypoints: np.ndarray
    keypoints_cam: np.ndarray
    keypoint_ref_depth: np.ndarray
    prims: Primitives = field(repr=False)


# --- colours ----------------------------------------------------------------------------------------
_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
     [92, 56, 34], [234, 192, 160], [170, 115, 80]], dtype=float,
) / 255  # fmt: skip
_HAIR_TONES = np.array(
    [[20, 16, 14], [60, 40, 28], [110, 75, 45], [170, 130, 80], [220, 195, 140], [150, 150, 150],
     [120, 40, 25]], dtype=float,
) / 255  # fmt: skip


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(30, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float) / 255


@dataclass
class Materials:
    """Per-material textures for all people: colour1/colour2 (M, 3) in [0,1], pattern (M,), freq (M,)."""

    colour1: np.ndarray
    colour2: np.ndarray
    pattern: np.ndarray
    freq: np.ndarray


def sample_materials(rng: np.random.Generator, people: int, plain: bool = False) -> Materials:
    """Colours and patterns of the ``NUM_MATERIALS`` materials of each person (skin, clothes...);
    ``plain``: one colour per material (no stripes, checks or waves)."""
    m = people * NUM_MATERIALS
    c1 = np.zeros((m, 3))
    c2 = np.zeros((m, 3))
    pattern = np.zeros(m, dtype=np.int64)
    freq = np.zeros(m)
    for p in range(people):
        base = p * NUM_MATERIALS
        skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.05)
        hair = _HAIR_TONES[rng.integers(len(_HAIR_TONES))]
        for k in range(NUM_MATERIALS):
            c1[base + k] = _random_colour(rng)
            c2[base + k] = _random_colour(rng)
            pattern[base + k] = 0 if plain else rng.choice(4, p=[0.45, 0.25, 0.15, 0.15])
            freq[base + k] = rng.uniform(4, 25)
        fixed = {
            SKIN: skin, HAIR: hair, LIP: skin * np.array([0.85, 0.55, 0.55]),
            SCLERA: np.array([0.93, 0.92, 0.9]), IRIS: _HAIR_TONES[rng.integers(4)] * 1.2 + 0.05,
            PUPIL: np.array([0.02, 0.02, 0.02]), MOUTH: np.array([0.25, 0.05, 0.06]),
            10: hair * 0.8,  # eyebrows
        }  # fmt: skip
        for k, col in fixed.items():
            c1[base + k] = np.clip(col, 0, 1)
            c2[base + k] = np.clip(col * 0.92, 0, 1)
            pattern[base + k] = 3 if k in (SKIN, HAIR) else 0
            freq[base + k] = 30.0 if k == HAIR else 6.0
    return Materials(c1, c2, pattern, freq)


def texture(mats: Materials, mat: np.ndarray, local: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """(N, 3) albedo in [0,1] at hit points: patterns live in the primitive's local frame (metres)."""
    # 'a' runs along the primitive's main axis (capsule z, others y); 'b' across it.
    a = np.where(kind == CAPSULE, local[:, 2], local[:, 1])
    b = np.where(kind == CAPSULE, local[:, 0] + 0.6 * local[:, 1], local[:, 0] + 0.6 * local[:, 2])
    f = mats.freq[mat] * 2 * np.pi
    pat = mats.pattern[mat]
    sa, sb = np.sin(f * a), np.sin(f * b)
    mix = np.select(
        [pat == 1, pat == 2, pat == 3],
        [(sa > 0).astype(float), (sa * sb > 0).astype(float), 0.5 + 0.5 * np.sin(f * a + 2 * sb)],
        default=0.0,
    )
    return mats.colour1[mat] * (1 - mix[:, None]) + mats.colour2[mat] * mix[:, None]


def background(rng: np.random.Generator, h: int, w: int, plain: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB procedural background: gradient, shapes, waves, optional blur;
    ``plain``: the gradient only."""
    c0, c1 = _random_colour(rng), _random_colour(rng)
    ys = np.linspace(0, 1, h)[:, None, None]
    img = (c0 * (1 - ys) + c1 * ys) * np.ones((1, w, 1))
    if plain:
        return (img * 255).astype(np.uint8)
    if rng.random() < 0.5:  # a horizon: floor of another colour
        hz = int(rng.uniform(0.4, 0.8) * h)
        img[hz:] = img[hz:] * 0.5 + _random_colour(rng) * 0.5
    img = (img * 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 14))):
        col = tuple(int(v) for v in (_random_colour(rng) * 255))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        sz = int(rng.integers(4, max(5, max(h, w) // 3)))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + sz, y + int(sz * rng.uniform(0.3, 3))), col, -1)
        else:
            cv2.circle(img, (x, y), sz // 2, col, -1)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:h, 0:w]
        wave = np.sin(xx * rng.uniform(0.02, 0.3) + yy * rng.uniform(0.02, 0.3))
        img = np.clip(img + wave[..., None] * rng.uniform(5, 30), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 3))
    return img


# --- scene ----------------------------------------------------------------------------------------
def look_at(eye: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """(3, 3) world -> OpenCV camera rotation (rows: right, down, forward) for a y-up world."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])
    c, s = np.cos(roll), np.sin(roll)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ rot


def _place_people(
    rng: np.random.Generator, n: int, facing: bool = False
) -> list[tuple[float, np.ndarray, bool]]:
    """(yaw, ground position, is_child) per person, at least 1 m apart when possible;
    ``facing``: every yaw 0 (facing +z)."""
    placed: list[np.ndarray] = []
    out = []
    for _ in range(n):
        for _ in range(50):
            spread = max(1.0, np.sqrt(n / 3)) * (n > 1)  # a larger floor area for crowds
            pos = np.array([rng.uniform(-1.5, 1.5), 0.0, rng.uniform(-1.2, 1.2)]) * spread
            if all(np.linalg.norm(pos - q) > 1.0 for q in placed):
                break
        placed.append(pos)
        yaw = 0.0 if facing else rng.uniform(0, 2 * np.pi)
        out.append((yaw, pos, bool(rng.random() < 0.12)))
    return out


def sample_scene(
    rng: np.random.Generator, cfg: SynthConfig
) -> tuple[list[Body], Primitives, np.ndarray, np.ndarray]:
    """People (world), their primitives in the camera frame, K (3,3) and world->camera (3,4)."""
    n = int(rng.integers(1, cfg.people_max + 1))
    simple = cfg.simple
    bodies = [
        sample_body(rng, yaw, pos, child, simple=simple)
        for yaw, pos, child in _place_people(rng, n, facing=simple)
    ]
    world = Primitives.concatenate([body_primitives(b, i) for i, b in enumerate(bodies)])
    h, w = cfg.height, cfg.width
    fov_y = np.radians(rng.uniform(28, 65))
    fy = (h / 2) / np.tan(fov_y / 2)
    K = np.array(
        [[fy, 0, (w - 1) / 2 + rng.uniform(-0.03, 0.03) * w],
         [0, fy, (h - 1) / 2 + rng.uniform(-0.03, 0.03) * h], [0, 0, 1]],
    )  # fmt: skip
    tan_y, tan_x = np.tan(fov_y / 2), (w / 2) / fy
    centre, radius = world.bounding_spheres()
    framing = "full" if simple else rng.choice(["full", "upper", "close"], p=[0.65, 0.25, 0.1])
    main = int(rng.integers(n))
    azim = rng.uniform(-np.pi / 6, np.pi / 6) if simple else rng.uniform(0, 2 * np.pi)
    elev = np.radians(rng.uniform(0, 20) if simple else rng.uniform(-12, 35))
    direction = np.array([np.sin(azim) * np.cos(elev), np.sin(elev), np.cos(azim) * np.cos(elev)])
    roll = 0.0 if simple else np.radians(rng.normal(0, 4))
    rot = look_at(direction, np.zeros(3), roll)
    if framing == "full" or (n > 1 and framing == "upper"):
        lo, hi = (centre - radius[:, None]).min(0), (centre + radius[:, None]).max(0)
        target = (lo + hi) / 2
        # Smallest distance at which every bounding sphere fits in the field of view.
        q = (centre - target) @ rot.T
        need = np.maximum((np.abs(q[:, 0]) + radius) / tan_x, (np.abs(q[:, 1]) + radius) / tan_y)
        dist = float(np.max(need - q[:, 2])) * rng.uniform(0.95, 1.3)
    else:
        if framing == "upper":
            target = bodies[main].joint("neck")[0] - [0, 0.2 * bodies[main].shape.scale, 0]
            half = 0.45 * bodies[main].shape.scale
        else:
            target = bodies[main].head_frame()[0] - [0, 0.06 * bodies[main].shape.scale, 0]
            half = 0.2 * bodies[main].shape.scale
        dist = half / min(tan_x, tan_y) * rng.uniform(1.0, 1.4) + half
        target = target + rng.normal(0, 0.1, 3) * half
    for _ in range(30):
        # Keep the people entirely in front of the camera; move back if the main one is not.
        eye = target + direction * dist
        rot = look_at(eye, target, roll)
        trans = -rot @ eye
        cam = world.transformed(rot, trans)
        zc, rc = cam.bounding_spheres()
        bad = np.zeros(n, dtype=bool)
        np.logical_or.at(bad, cam.person, zc[:, 2] - rc < 0.05)
        if not bad[main]:
            break
        dist *= 1.2
    keep = np.flatnonzero(~bad)
    remap = np.full(n, -1)
    remap[keep] = np.arange(keep.size)
    cam = cam.subset(np.flatnonzero(~bad[cam.person]))
    cam.person = remap[cam.person]
    bodies = [bodies[i] for i in keep]
    return bodies, cam, K, np.concatenate([rot, trans[:, None]], axis=1)


def _first_hits(prims: Primitives, prim: np.ndarray, ray: np.ndarray, dirs: np.ndarray, n: int):
    """Nearest hit of ``n`` camera rays, testing the (ray, primitive) pairs given.

    Args:
        prims: primitives in the camera frame.
        prim: (M,) primitive index of each pair.
        ray: (M,) ray index of each pair, in ``0..n-1``.
        dirs: (M, 3) direction of each pair's ray.
        n: number of rays.

    Returns:
        depth (n,) (inf on a miss), primitive index (n,) (-1), local hit point (n, 3), normal (n, 3).
    """
    hits = intersect(prims, prim, np.zeros(3), dirs)
    ok = np.isfinite(hits.t)
    ray, t, prim = ray[ok], hits.t[ok], prim[ok]
    depth = np.full(n, np.inf)
    pidx = np.full(n, -1, dtype=np.int64)
    local = np.zeros((n, 3))
    normal = np.zeros((n, 3))
    if ray.size == 0:
        return depth, pidx, local, normal
    order = np.lexsort((prim, t, ray))
    first = order[np.r_[True, ray[order][1:] != ray[order][:-1]]]
    sel = ray[first]
    depth[sel] = t[first]
    pidx[sel] = prim[first]
    local[sel] = hits.local[ok][first]
    normal[sel] = hits.normal[ok][first]
    return depth, pidx, local, normal


def raycast(prims: Primitives, K: np.ndarray, h: int, w: int):
    """Nearest hit per pixel (one ray through the pixel centre).

    Returns:
        depth (H*W,) (inf on background), primitive index (H*W,) (-1), local hit point (H*W, 3),
        normal (H*W, 3).
    """
    box = screen_boxes(prims, K, h, w)
    nx = np.maximum(box[:, 2] - box[:, 0] + 1, 0)
    ny = np.maximum(box[:, 3] - box[:, 1] + 1, 0)
    count = nx * ny
    prim = np.repeat(np.arange(len(prims)), count)
    start = np.repeat(np.cumsum(count) - count, count)
    k = np.arange(prim.size) - start
    px = box[prim, 0] + k % nx[prim]
    py = box[prim, 1] + k // nx[prim]
    dirs = np.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], np.ones(px.size)], 1)
    return _first_hits(prims, prim, py * w + px, dirs, h * w)


def raycast_subpixels(prims: Primitives, K: np.ndarray, h: int, w: int, pixels: np.ndarray, s: int):
    """Nearest hits of ``s x s`` rays spread evenly inside each of the given pixels.

    Sub-ray ``(a, b)`` of pixel ``(i, j)`` passes through ``(j + o_b, i + o_a)``,
    ``o_k = (k + 0.5) / s - 0.5``. Only the primitives whose screen box holds the pixel are
    tested: a box spans the integer pixels ``floor`` .. ``ceil`` of the primitive's projection, so
    a ray that stays within half a pixel of an outside pixel's centre misses the primitive.

    Args:
        prims: primitives in the camera frame. K: (3, 3). h, w: image size.
        pixels: (N,) flat pixel indices ``i * w + j``.
        s: sub-rays per side.

    Returns:
        ``(depth, primitive, local, normal)`` as :func:`raycast` for the ``N * s * s`` rays
        (pixel-major, then row-major sub-rays), and their directions (N * s * s, 3).
    """
    box = screen_boxes(prims, K, h, w)
    px, py = pixels % w, pixels // w
    off = (np.arange(s) + 0.5) / s - 0.5
    u = (px[:, None, None] + off[None, None, :]).repeat(s, 1).reshape(-1)
    v = (py[:, None, None] + off[None, :, None]).repeat(s, 2).reshape(-1)
    dirs = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.size)], 1)
    inside = (
        (box[None, :, 0] <= px[:, None])
        & (px[:, None] <= box[None, :, 2])
        & (box[None, :, 1] <= py[:, None])
        & (py[:, None] <= box[None, :, 3])
    )
    pix, prim = np.nonzero(inside)
    ss = s * s
    ray = (pix[:, None] * ss + np.arange(ss)).reshape(-1)
    prim = np.repeat(prim, ss)
    return _first_hits(prims, prim, ray, dirs[ray], pixels.size * ss), dirs


def outline_pixels(person: np.ndarray) -> np.ndarray:
    """Flat indices of the pixels whose 3x3 neighbourhood (inside the image) holds both person
    and background pixels; ``person`` (H, W) bool."""
    m = person.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    return np.flatnonzero(cv2.dilate(m, kernel) != cv2.erode(m, kernel))


@dataclass
class Lights:
    """Shading: an ambient term (``ambient * tint``), up to two directional lights and a gloss.

    ``lights`` holds ``(unit direction towards the light, power, RGB colour)`` per light.
    """

    tint: np.ndarray
    ambient: float
    gloss: float
    lights: list[tuple[np.ndarray, float, np.ndarray]]


def sample_lights(rng: np.random.Generator) -> Lights:
    """Ambient tint and level, gloss, then one or two lights (direction, power, colour)."""
    tint = 1 + rng.uniform(-0.12, 0.12, 3)
    ambient = rng.uniform(0.15, 0.45)
    gloss = rng.uniform(0, 0.25)
    lights = []
    for _ in range(int(rng.integers(1, 3))):
        ld = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.4), rng.uniform(-1, -0.1)])
        ld /= np.linalg.norm(ld)  # direction towards the light, camera frame
        power = rng.uniform(0.5, 1.0)
        lights.append((ld, power, 1 + rng.uniform(-0.15, 0.15, 3)))
    return Lights(tint, ambient, gloss, lights)


def shade(lights: Lights, albedo: np.ndarray, normal: np.ndarray, view: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1]: ambient + Lambert per light + a little Blinn-Phong.

    Args:
        albedo: (N, 3) in [0, 1]. normal: (N, 3) unit. view: (N, 3) unit, towards the camera.
    """
    light = np.full((normal.shape[0], 3), lights.ambient) * lights.tint
    spec = np.zeros((normal.shape[0], 1))
    for ld, power, colour in lights.lights:
        lam = np.clip(normal @ ld, 0, None)[:, None]
        light = light + power * lam * colour
        half = ld + view
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        spec = (
            spec
            + lights.gloss * power * np.clip(np.sum(normal * half, 1, keepdims=True), 0, 1) ** 30
        )
    return np.clip(albedo * light + spec, 0, 1)


def _surface(bodies: list[Body], prims: Primitives, mats: Materials, pidx, local):
    """29-class labels (N,) uint8 and albedo (N, 3) of N surface hits (primitive, local point)."""
    person = prims.person[pidx]
    cls = np.zeros(pidx.size, dtype=np.uint8)
    mat = np.zeros(pidx.size, dtype=np.int64)
    for p, body in enumerate(bodies):
        sel = person == p
        pi = pidx[sel]
        c, m = part_regions(
            prims.part[pi], local[sel], prims.size[pi], body.outfit, body.head_frame()[2]
        )
        cls[sel] = c
        mat[sel] = p * NUM_MATERIALS + m
    return cls, texture(mats, mat, local, prims.kind[pidx])


def _soft_edges(bodies, prims, mats, lights, K, h, w, pixels, s):
    """Coverage (N,) and mean shaded colour of the hitting sub-rays (N, 3) (0 with no hit)."""
    (_, pidx, local, normal), dirs = raycast_subpixels(prims, K, h, w, pixels, s)
    hit = pidx >= 0
    _, alb = _surface(bodies, prims, mats, pidx[hit], local[hit])
    view = -dirs[hit] / np.linalg.norm(dirs[hit], axis=1, keepdims=True)
    rgb = np.zeros((pidx.size, 3))
    rgb[hit] = shade(lights, alb, normal[hit], view)
    count = hit.reshape(pixels.size, s * s).sum(1)
    total = rgb.reshape(pixels.size, s * s, 3).sum(1)
    colour = total / np.maximum(count, 1)[:, None]
    return count / (s * s), colour


def render_sample(rng: np.random.Generator, cfg: SynthConfig) -> SynthSample:
    """Samples a scene and renders the image with all labels."""
    h, w = cfg.height, cfg.width
    bodies, prims, K, extrinsic = sample_scene(rng, cfg)
    mats = sample_materials(rng, len(bodies), plain=cfg.simple)
    depth, pidx, local, normal = raycast(prims, K, h, w)
    fg = np.flatnonzero(pidx >= 0)
    person = prims.person[pidx[fg]]

    # Labels and albedo.
    seg = np.zeros(h * w, dtype=np.uint8)
    seg[fg], alb = _surface(bodies, prims, mats, pidx[fg], local[fg])

    # Shading: ambient + up to two directional lights (Lambert) + a little Blinn-Phong.
    n = normal[fg]
    view = np.stack(
        [(fg % w - K[0, 2]) / K[0, 0], (fg // w - K[1, 2]) / K[1, 1], np.ones(fg.size)], 1
    )
    view = -view / np.linalg.norm(view, axis=1, keepdims=True)
    lights = sample_lights(rng)
    rgb_fg = shade(lights, alb, n, view)

    back = background(rng, h, w, plain=cfg.simple)
    img = back.reshape(-1, 3).astype(np.float64)
    img[fg] = rgb_fg * 255
    alpha = np.zeros(h * w)
    alpha[fg] = 1.0
    colour = np.zeros((h * w, 3))
    colour[fg] = rgb_fg
    if cfg.soft_edges:
        edge = outline_pixels((pidx >= 0).reshape(h, w))
        if edge.size:
            s = cfg.edge_samples
            alpha[edge], colour[edge] = _soft_edges(bodies, prims, mats, lights, K, h, w, edge, s)
            a = alpha[edge, None]
            img[edge] = 255 * (a * colour[edge]) + (1 - a) * back.reshape(-1, 3)[edge]
    foreground = (alpha[:, None] * colour).astype(np.float32)
    sigma = rng.uniform(0, cfg.noise)
    img = img + rng.normal(0, 1, img.shape) * sigma
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8).reshape(h, w, 3)

    albedo = np.zeros((h * w, 3), dtype=np.uint8)
    albedo[fg] = np.clip(np.rint(alb * 255), 0, 255).astype(np.uint8)
    pointmap = np.zeros((h * w, 3), dtype=np.float32)
    uu, vv = fg % w, fg // w
    z = depth[fg]
    pointmap[fg] = np.stack([(uu - K[0, 2]) / K[0, 0] * z, (vv - K[1, 2]) / K[1, 1] * z, z], 1)
    normals = np.zeros((h * w, 3), dtype=np.float32)
    normals[fg] = n
    instance = np.full(h * w, -1, dtype=np.int16)
    instance[fg] = person
    mask = np.where(pidx >= 0, 255, 0).astype(np.uint8)

    # Keypoints (camera frame) and their visibility.
    rot, trans = extrinsic[:, :3], extrinsic[:, 3]
    boxes = screen_boxes(prims, K, h, w)
    kp_cam, kp_2d, kp_ref = [], [], []
    for p, body in enumerate(bodies):
        own = prims.subset(np.flatnonzero(prims.person == p))
        cam_body = replace(
            body, pos=body.pos @ rot.T + trans, rot=np.einsum("ij,njk->nik", rot, body.rot)
        )
        pts = keypoints_3d(cam_body, own)
        kp, ref = keypoint_visibility(pts, p, prims, K, (h, w), boxes)
        kp_cam.append(pts)
        kp_2d.append(kp)
        kp_ref.append(ref)
    return SynthSample(
        image=image,
        mask=mask.reshape(h, w),
        alpha=alpha.reshape(h, w).astype(np.float32),
        foreground=foreground.reshape(h, w, 3),
        background=back,
        seg=seg.reshape(h, w),
        normal=normals.reshape(h, w, 3),
        pointmap=pointmap.reshape(h, w, 3),
        albedo=albedo.reshape(h, w, 3),
        K=K,
        instance=instance.reshape(h, w),
        primitive=pidx.reshape(h, w).astype(np.int32),
        keypoints=np.stack(kp_2d),
        keypoints_cam=np.stack(kp_cam),
        keypoint_ref_depth=np.stack(kp_ref),
        prims=prims,
    )
