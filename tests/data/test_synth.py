"""Synthetic humans: the labels of all five tasks agree with each other, the files follow the
dataset contract, and generation is deterministic per seed."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from sapiens2.cli.main import main
from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.data.synth import labels
from sapiens2.data.synth.primitives import (
    BOX,
    CAPSULE,
    ELLIPSOID,
    Primitives,
    cast_nearest,
    contains,
    intersect,
)
from sapiens2.data.synth.render import (
    SynthConfig,
    outline_pixels,
    raycast_subpixels,
    render_sample,
)
from sapiens2.data.synth.writer import WriteConfig, sample_rng, write_dataset

CFG = SynthConfig(height=160, width=120, people_max=3)
SEEDS = range(8)


@pytest.fixture(scope="module")
def samples():
    return [render_sample(sample_rng(11, i), CFG) for i in SEEDS]


def _one(kind: int, size, center=(0.0, 0.0, 3.0), rot=None) -> Primitives:
    return Primitives(
        kind=np.array([kind]),
        center=np.array([center], dtype=float),
        rot=np.eye(3)[None] if rot is None else np.asarray(rot, float)[None],
        size=np.array([size], dtype=float),
        part=np.zeros(1, dtype=np.int64),
        person=np.zeros(1, dtype=np.int64),
    )


# --- primitives -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "size"),
    [(ELLIPSOID, (0.3, 0.5, 0.4)), (CAPSULE, (0.2, 0.6, 0.0)), (BOX, (0.3, 0.2, 0.25))],
)
def test_ray_hits_lie_on_surface_with_outward_normals(kind, size):
    rng = np.random.default_rng(0)
    ang = rng.normal(size=3)
    rot = cv2.Rodrigues(ang)[0]
    prims = _one(kind, size, rot=rot)
    dirs = np.column_stack([rng.uniform(-0.3, 0.3, (4000, 2)), np.ones(4000)])
    hits = intersect(prims, np.zeros(4000, dtype=np.int64), np.zeros(3), dirs)
    ok = np.isfinite(hits.t)
    assert 100 < ok.sum() < 4000
    pts = dirs[ok] * hits.t[ok, None]
    idx = np.zeros(ok.sum(), dtype=np.int64)
    # On the surface: inside when grown by 1e-6, outside when shrunk by 1e-4.
    assert contains(prims, idx, pts, tol=1e-6).all()
    assert not contains(prims, idx, pts, tol=-1e-4).any()
    # Points a bit before the hit along the ray are outside (it is the first hit).
    assert not contains(prims, idx, dirs[ok] * (hits.t[ok, None] - 1e-3)).any()
    # Outward normal: stepping along it leaves the primitive, and it faces the camera.
    assert not contains(prims, idx, pts + 1e-3 * hits.normal[ok]).any()
    assert (np.einsum("ij,ij->i", hits.normal[ok], dirs[ok]) <= 1e-9).all()
    # Missed rays really miss: samples along them never enter the primitive.
    miss = np.flatnonzero(~ok)[:200]
    ts = np.linspace(0.5, 6, 400)
    for i in miss[:50]:
        assert not contains(prims, np.zeros(400, np.int64), dirs[i] * ts[:, None]).any()


def test_cast_nearest_with_culled_pairs_matches_brute_force():
    rng = np.random.default_rng(1)
    prims = Primitives.concatenate(
        [_one(k, s, c) for k, s, c in [(ELLIPSOID, (0.3, 0.3, 0.3), (0, 0, 3)),
                                        (CAPSULE, (0.1, 0.5, 0), (0.1, 0.0, 2.5)),
                                        (BOX, (0.2, 0.2, 0.2), (-0.1, 0.1, 2.0))]]
    )  # fmt: skip
    dirs = np.column_stack([rng.uniform(-0.2, 0.2, (500, 2)), np.ones(500)])
    t, idx = cast_nearest(prims, np.zeros(3), dirs)
    for p in range(3):
        tp = intersect(prims, np.full(500, p), np.zeros(3), dirs).t
        assert (t <= tp).all()
    assert set(np.unique(idx)) == {-1, 0, 1, 2}


# --- labels of rendered samples -------------------------------------------------------------------
def test_pointmap_projects_onto_the_pixel_grid(samples):
    for s in samples:
        m = s.mask > 0
        assert m.any()
        p = s.pointmap.astype(np.float64)
        assert (p[m][:, 2] > 0).all()
        assert (p[~m] == 0).all()
        u = s.K[0, 0] * p[..., 0] / np.where(m, p[..., 2], 1) + s.K[0, 2]
        v = s.K[1, 1] * p[..., 1] / np.where(m, p[..., 2], 1) + s.K[1, 2]
        rows, cols = np.nonzero(m)
        assert np.abs(u[m] - cols).max() < 2e-3
        assert np.abs(v[m] - rows).max() < 2e-3


def test_normals_agree_with_pointmap_finite_differences(samples):
    angles = []
    for s in samples:
        p = s.pointmap.astype(np.float64)
        dx = np.zeros_like(p)
        dy = np.zeros_like(p)
        dx[:, 1:-1] = p[:, 2:] - p[:, :-2]
        dy[1:-1] = p[2:] - p[:-2]
        n = np.cross(dy, dx)  # right-handed with x right, y down: faces the camera (z < 0)
        n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
        # Away from edges: the whole 3x3 neighbourhood shows the same primitive.
        pid = s.primitive
        same = pid >= 0
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                same &= np.roll(pid, (a, b), axis=(0, 1)) == pid
        same[[0, -1]] = False
        same[:, [0, -1]] = False
        cos = np.clip(np.sum(n * s.normal, axis=-1), -1, 1)
        angles.append(np.degrees(np.arccos(cos[same])))
        m = s.mask > 0
        assert np.allclose(np.linalg.norm(s.normal[m], axis=-1), 1, atol=1e-5)
        assert (s.normal[~m] == 0).all()
        # Every visible surface faces the camera: the normal points against the viewing ray.
        assert (np.sum(s.normal[m] * p[m], axis=-1) < 1e-6).all()
    a = np.concatenate(angles)
    assert a.size > 2000
    assert np.median(a) < 1.0, np.median(a)
    assert np.percentile(a, 95) < 5.0, np.percentile(a, 95)


def test_parts_albedo_and_instances_agree_with_the_mask(samples):
    seen = set()
    for s in samples:
        m = s.mask > 0
        assert set(np.unique(s.mask)) <= {0, 255}
        assert ((s.seg > 0) == m).all()
        assert (s.seg <= 28).all()
        assert ((s.albedo.max(-1) > 0) == m).all()
        assert ((s.instance >= 0) == m).all()
        assert s.image.dtype == np.uint8 and s.image.shape == (*s.mask.shape, 3)
        seen |= set(np.unique(s.seg).tolist())
    names = seg29().names
    # The generator produces the main body-part classes, on both sides.
    for cls in ("Face_Neck", "Upper_Clothing", "Lower_Clothing"):
        assert names.index(cls) in seen, cls
    assert any(names[c].startswith("Left_") for c in seen)
    assert any(names[c].startswith("Right_") for c in seen)


def test_left_right_part_labels_follow_the_person_not_the_image():
    # A person seen from the front shows their left side on the image right, seen from the back on
    # the image left; the left/right classes must follow the body.
    names = seg29().names
    left = [names.index(n) for n in names if n.startswith("Left_")]
    right = [names.index(n) for n in names if n.startswith("Right_")]
    hits = {"ok": 0, "bad": 0}
    for i in range(20):
        s = render_sample(sample_rng(5, i), CFG)
        for p in range(s.keypoints.shape[0]):
            kp = s.keypoints[p]
            ls, rs = kp[5], kp[6]  # left / right shoulder
            own = s.instance == p
            cols = np.nonzero(own)[1]
            if ls[2] == 0 or rs[2] == 0 or abs(ls[0] - rs[0]) < 8:
                continue
            lmask = own & np.isin(s.seg, left)
            rmask = own & np.isin(s.seg, right)
            if lmask.sum() < 20 or rmask.sum() < 20 or cols.size == 0:
                continue
            same = (np.nonzero(lmask)[1].mean() > np.nonzero(rmask)[1].mean()) == (ls[0] > rs[0])
            hits["ok" if same else "bad"] += 1
    assert hits["ok"] >= 5 and hits["ok"] >= 4 * hits["bad"], hits


def test_simple_scenes_show_whole_people_from_the_front_on_plain_backgrounds():
    cfg = replace(CFG, people_max=1, simple=True)
    h, w = cfg.height, cfg.width
    for i in range(12):
        s = render_sample(sample_rng(2, i), cfg)
        kp = s.keypoints[0]
        # Facing the camera: the nose is visible and the person's left shoulder is on the image
        # right. Framed whole: every body keypoint lies inside the image.
        assert kp[0, 2] > 0, i
        assert kp[5, 0] > kp[6, 0], i
        body = kp[:17]
        assert (body[:, 0] >= 0).all() and (body[:, 0] < w).all(), i
        assert (body[:, 1] >= 0).all() and (body[:, 1] < h).all(), i
        # A plain vertical gradient behind: background rows vary only by the sensor noise.
        bg = np.where((s.alpha == 0)[..., None], s.image.astype(float), np.nan)
        row_std = np.nanstd(bg, axis=1)
        assert np.nanmedian(row_std) < cfg.noise + 1, i


def test_soft_alpha_and_foreground_composite_to_the_image():
    # Without sensor noise the image is exactly the composite of the labels, up to its rounding.
    cfg = replace(CFG, noise=0.0)
    fractional = 0
    for i in range(4):
        s = render_sample(sample_rng(11, i), cfg)
        hard = render_sample(sample_rng(11, i), replace(cfg, soft_edges=False))
        a, fg = s.alpha.astype(np.float64), s.foreground.astype(np.float64)
        composite = 255 * fg + (1 - a[..., None]) * s.background
        assert np.abs(composite - s.image).max() <= 0.5 + 1e-3
        # Alpha: 1 inside people, 0 away from them, fractional only on the outline pixels, in
        # steps of 1/16 (4 x 4 sub-rays).
        person = s.mask > 0
        ring = np.zeros(person.size, bool)
        ring[outline_pixels(person)] = True
        ring = ring.reshape(person.shape)
        assert (a[person & ~ring] == 1).all() and (a[~person & ~ring] == 0).all()
        frac = (a > 0) & (a < 1)
        assert (frac <= ring).all() and np.allclose(a * 16, np.rint(a * 16))
        fractional += frac.sum()
        # The pre-multiplied foreground is 0 without coverage and at most alpha.
        assert (fg[a == 0] == 0).all() and (fg <= a[..., None] + 1e-6).all()
        # Soft edges change the image on the outline only, and no other label.
        assert (s.image[~ring] == hard.image[~ring]).all() and (s.image != hard.image).any()
        for name in ("mask", "seg", "normal", "pointmap", "albedo", "keypoints", "background"):
            assert np.array_equal(getattr(s, name), getattr(hard, name)), name
        assert np.array_equal(hard.alpha, person.astype(np.float32))
    assert fractional > 100


def test_subpixel_rays_equal_brute_force_casting():
    # The screen-box culling of the sub-pixel rays loses no hit: every ray against every primitive.
    s = render_sample(sample_rng(11, 1), CFG)
    edge = outline_pixels(s.mask > 0)[::7]
    (t, prim, _, _), dirs = raycast_subpixels(s.prims, s.K, *s.mask.shape, edge, 4)
    t_all, prim_all = cast_nearest(s.prims, np.zeros(3), dirs)
    assert np.array_equal(prim, prim_all) and np.array_equal(t, t_all)
    assert 0 < (prim >= 0).mean() < 1
    cov = (prim >= 0).reshape(-1, 16).mean(1)
    assert np.array_equal(cov, s.alpha.reshape(-1)[edge])


def test_visible_keypoints_lie_on_their_person(samples):
    ok, total = 0, 0
    for s in samples:
        h, w = s.mask.shape
        inst = np.pad(s.instance, 1, constant_values=-1)
        for p in range(s.keypoints.shape[0]):
            kp = s.keypoints[p]
            lab = kp[:, 2] > 0
            assert ((kp[lab, 0] >= 0) & (kp[lab, 0] <= w - 1)).all()
            assert ((kp[lab, 1] >= 0) & (kp[lab, 1] <= h - 1)).all()
            assert (kp[~lab, :2] == 0).all()
            for x, y, v in kp:
                if v == 2:
                    xi, yi = round(float(x)) + 1, round(float(y)) + 1
                    ok += (inst[yi - 1 : yi + 2, xi - 1 : xi + 2] == p).any()
                    total += 1
    assert total > 300
    assert ok / total > 0.99, (ok, total)


def test_keypoint_visibility_agrees_with_depth_order(samples):
    surface = labels._surface_mask()
    occ_ok, occ_total = 0, 0
    for s in samples:
        K = s.K
        depth = np.pad(np.where(s.mask > 0, s.pointmap[..., 2], np.inf), 1, constant_values=np.inf)
        for p in range(s.keypoints.shape[0]):
            kp, ref, pts = s.keypoints[p], s.keypoint_ref_depth[p], s.keypoints_cam[p]
            lab = kp[:, 2] > 0
            # The stored pixel positions are the projections of the 3D keypoints.
            u = K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]
            v = K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]
            assert np.allclose(kp[lab, 0], u[lab], atol=1e-3)
            assert np.allclose(kp[lab, 1], v[lab], atol=1e-3)
            # Exact: brute-force first hit along each keypoint's ray, against every primitive.
            dirs = pts / pts[:, 2:3]
            t_first, _ = cast_nearest(s.prims, np.zeros(3), dirs)
            eps = np.where(surface, labels.SURFACE_EPS, 1e-6)
            assert np.allclose(ref[lab & surface], pts[lab & surface, 2])
            assert (ref[lab & ~surface] <= pts[lab & ~surface, 2] + 1e-9).all()
            visible = t_first >= ref - eps
            assert ((kp[lab, 2] == 2) == visible[lab]).all()
            # Pixel level: an occluded keypoint has something nearer than its surface next to it.
            for k in np.flatnonzero(kp[:, 2] == 1):
                xi, yi = round(float(kp[k, 0])) + 1, round(float(kp[k, 1])) + 1
                occ_ok += (depth[yi - 1 : yi + 2, xi - 1 : xi + 2] < ref[k]).any()
                occ_total += 1
    assert occ_total > 100
    assert occ_ok / occ_total > 0.99, (occ_ok, occ_total)


def test_part_regions_follow_the_outfit():
    from sapiens2.data.synth.body import PART

    names = seg29().names
    outfit = {"shirt": True, "sleeve": 1.6, "shirt_bottom": -0.5, "pants": 1.5, "socks": 0.2,
              "shoes": False, "bald": True, "mouth_open": 0.0}  # fmt: skip
    parts = ["upper_arm_l", "upper_arm_r", "forearm_l", "forearm_l", "chest", "abdomen",
             "abdomen", "shin_r", "shin_r", "shin_r", "foot_l", "palm_r"]  # fmt: skip
    s_axis = [-0.1, 0.9, 0.5, 0.7, 0, 0, 0, 0.3, 0.6, 0.9, 0, 0]
    qy = [0, 0, 0, 0, 0.2, 0.0, -0.9, 0, 0, 0, 0, 0]
    size = np.array([[0.05, 1.0, 0.1]] * len(parts))
    local = np.column_stack([np.zeros(len(parts)), np.array(qy) * size[:, 1], s_axis])
    code = np.array([PART[p] for p in parts])
    cls, _ = labels.part_regions(code, local, size, outfit, 1.0)
    want = ["Upper_Clothing", "Upper_Clothing", "Upper_Clothing", "Left_Lower_Arm",
            "Upper_Clothing", "Upper_Clothing", "Torso", "Lower_Clothing", "Right_Lower_Leg",
            "Right_Sock", "Left_Sock", "Right_Hand"]  # fmt: skip
    assert [names[c] for c in cls] == want
    # Without a shirt nothing is clothing above the waist, whatever the sleeve length.
    cls, _ = labels.part_regions(code, local, size, {**outfit, "shirt": False}, 1.0)
    assert [names[c] for c in cls[:7]] == ["Left_Upper_Arm", "Right_Upper_Arm", "Left_Lower_Arm",
                                           "Left_Lower_Arm", "Torso", "Torso", "Torso"]  # fmt: skip


def test_mirrored_pose_gives_flipped_keypoints():
    # Right joints mirror the left ones, so a pose with equal left/right angles is mirror
    # symmetric, and all 308 keypoints must map onto each other through flip_indices.
    from sapiens2.data.synth import body as B

    rng = np.random.default_rng(0)
    meta = keypoints308()
    angles = B.sample_pose(rng)
    for i, jt in enumerate(B.SKELETON):
        if jt.name.endswith("_r"):
            angles[i] = angles[B.JOINT_INDEX[jt.name[:-2] + "_l"]]
        elif not jt.name.endswith("_l"):
            angles[i] = [angles[i, 0], 0.0, 0.0]  # central joints: no twist or side bend
    shape = B.sample_shape(rng)
    pos, rot = B.forward_kinematics(shape, angles, np.eye(3), np.array([0.0, 1.0, 0.0]))
    outfit = {**B.sample_outfit(rng), "hat": False, "glasses": False, "hair_volume": "none"}
    body = B.Body(shape=shape, pos=pos, rot=rot, outfit=outfit)
    prims = B.body_primitives(body, 0)
    kp = labels.keypoints_3d(body, prims)
    np.testing.assert_allclose(kp[meta.flip_indices] * [-1, 1, 1], kp, atol=1e-9)
    # The person's left is +x (the body faces +z with y up).
    assert kp[meta.index("left_shoulder"), 0] > 0 > kp[meta.index("right_shoulder"), 0]
    assert kp[meta.index("left_big_toe"), 0] < kp[meta.index("left_small_toe"), 0]
    # Bone lengths do not depend on the pose.
    pos0, _ = B.forward_kinematics(shape, np.zeros_like(angles), np.eye(3), np.zeros(3))
    for a, b in (
        ("shoulder_l", "elbow_l"),
        ("hip_r", "knee_r"),
        ("forefinger2_l", "forefinger3_l"),
    ):
        ia, ib = B.JOINT_INDEX[a], B.JOINT_INDEX[b]
        assert np.isclose(np.linalg.norm(pos[ia] - pos[ib]), np.linalg.norm(pos0[ia] - pos0[ib]))


def test_face_template_is_flip_consistent_and_sided():
    meta = keypoints308()
    t = labels.face_template(0.004)
    face = np.arange(70, 308)
    flipped = t[meta.flip_indices[face]] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(flipped, t[face], atol=1e-12)
    for i in face:
        name = meta.names[i]
        if name.startswith("l_") or "_l_" in name:
            assert t[i, 0] > 0, name  # the person's left is +x in the head frame
        if name.startswith("r_") or "_r_" in name:
            assert t[i, 0] < 0, name
    # Eyes above the nose tip, nose tip above the mouth, mouth above the chin.
    y = {n: t[meta.index(n), 1] for n in ("r_center_of_iris", "tip_of_nose", "center_of_cupid_bow",
                                          "tip_of_chin")}  # fmt: skip
    assert y["r_center_of_iris"] > y["tip_of_nose"] > y["center_of_cupid_bow"] > y["tip_of_chin"]
    # The nose tip protrudes in front of the face surface around it.
    assert t[meta.index("tip_of_nose"), 2] > t[meta.index("r_center_of_iris"), 2] + 0.01


# --- files ----------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dataset_files_follow_the_contract_and_are_deterministic(tmp_path):
    a = WriteConfig(out=tmp_path / "a", num=5, seed=3, val_fraction=0.4, workers=1,
                    render=SynthConfig(64, 48, 2))  # fmt: skip
    write_dataset(a)
    write_dataset(replace(a, out=tmp_path / "b", workers=2))
    ta, tb = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert ta == tb  # same seed -> byte-identical, whatever the number of workers
    write_dataset(replace(a, out=tmp_path / "c", seed=4))
    tc = _tree(tmp_path / "c")
    assert ta["train/images/000000.png"] != tc["train/images/000000.png"]

    root = tmp_path / "a"
    for split, ids in (("train", ["000000", "000001", "000002"]), ("val", ["000003", "000004"])):
        pose = json.loads((root / split / "pose.json").read_text())
        assert [im["file_name"] for im in pose["images"]] == [f"images/{i}.png" for i in ids]
        assert len(pose["categories"][0]["keypoints"]) == 308
        for i in ids:
            d = root / split
            img = cv2.imread(str(d / "images" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(d / "mask" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            seg = cv2.imread(str(d / "seg" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            albedo = cv2.imread(str(d / "albedo" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            alpha = cv2.imread(str(d / "alpha" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            fg = cv2.imread(str(d / "foreground" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            normal = np.load(d / "normal" / f"{i}.npy")
            pm = np.load(d / "pointmap" / f"{i}.npy")
            cam = json.loads((d / "camera" / f"{i}.json").read_text())
            assert img.shape == (64, 48, 3) and img.dtype == np.uint8
            assert mask.shape == seg.shape == (64, 48) and albedo.shape == (64, 48, 3)
            assert normal.dtype == pm.dtype == np.float32 and normal.shape == pm.shape == (
                64,
                48,
                3,
            )
            assert cam["width"] == 48 and cam["height"] == 64 and np.array(cam["K"]).shape == (3, 3)
            assert ((seg > 0) == (mask == 255)).all()
            # Files equal a fresh in-memory render of the same index.
            s = render_sample(sample_rng(3, int(i)), SynthConfig(64, 48, 2))
            assert (cv2.cvtColor(img, cv2.COLOR_BGR2RGB) == s.image).all()
            assert (pm == s.pointmap).all() and (normal == s.normal).all()
            assert alpha.dtype == fg.dtype == np.uint8 and alpha.shape == (64, 48)
            assert (alpha == np.rint(s.alpha * 255)).all()
            assert (cv2.cvtColor(fg, cv2.COLOR_BGR2RGB) == np.rint(s.foreground * 255)).all()
            anns = [a for a in pose["annotations"] if a["image_id"] == int(i)]
            for ann in anns:
                kp = np.array(ann["goliath_wholebody_kpts"]).reshape(308, 3)
                assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
                assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
                x, y, w, h = ann["bbox"]
                assert x >= 0 and y >= 0 and x + w <= 48 and y + h <= 64 and ann["area"] > 0
    assert sum(len(json.loads((root / s / "pose.json").read_text())["annotations"])
               for s in ("train", "val")) >= 5  # fmt: skip


def test_shards_hold_the_same_bytes_as_folders(tmp_path):
    base = WriteConfig(out=tmp_path / "f", num=5, seed=2, val_fraction=0.2, workers=1,
                       render=SynthConfig(48, 40, 2))  # fmt: skip
    write_dataset(base)
    write_dataset(replace(base, out=tmp_path / "s", shards=True, shard_size=3))
    names = sorted(p.name for p in (tmp_path / "s").glob("*.tar"))
    assert names == ["train-000000.tar", "train-000001.tar", "val-000000.tar"]
    suffixes = ["rgb.png", "mask.png", "seg.png", "normal.npy", "pointmap.npy", "camera.json",
                "albedo.png", "alpha.png", "foreground.png", "pose.json"]  # fmt: skip
    folder = {"rgb.png": "images/{}.png", "mask.png": "mask/{}.png", "seg.png": "seg/{}.png",
              "normal.npy": "normal/{}.npy", "pointmap.npy": "pointmap/{}.npy",
              "camera.json": "camera/{}.json", "albedo.png": "albedo/{}.png",
              "alpha.png": "alpha/{}.png", "foreground.png": "foreground/{}.png"}  # fmt: skip
    keys = []
    for name in names:
        split = name.split("-")[0]
        with tarfile.open(tmp_path / "s" / name) as tar:
            members = tar.getmembers()
            assert all(m.mtime == 0 and m.uid == 0 for m in members)
            for j in range(0, len(members), len(suffixes)):
                group = members[j : j + len(suffixes)]
                key = group[0].name.split(".")[0]
                keys.append(key)
                assert [m.name for m in group] == [f"{key}.{s}" for s in suffixes]
                for m in group:
                    data = tar.extractfile(m).read()
                    suf = m.name.split(".", 1)[1]
                    if suf == "pose.json":
                        pose = json.loads((tmp_path / "f" / split / "pose.json").read_text())
                        want = [a for a in pose["annotations"] if a["image_id"] == int(key)]
                        assert json.loads(data) == want
                    else:
                        assert (
                            data == (tmp_path / "f" / split / folder[suf].format(key)).read_bytes()
                        )
    assert keys == ["000000", "000001", "000002", "000003", "000004"]
    assert np.load(io.BytesIO((tmp_path / "f/train/normal/000000.npy").read_bytes())).shape == (
        48,
        40,
        3,
    )


def test_cli_writes_a_dataset_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "--out", str(out), "--num", "2", "--size", "48", "32", "--seed", "1",
                 "--val-fraction", "0.5", "--workers", "1"]) == 0  # fmt: skip
    assert json.loads((out / "train" / "pose.json").read_text())["images"][0]["width"] == 32
    grid_path = tmp_path / "grid.png"
    assert main(["synth", "--out", str(tmp_path / "g"), "--num", "2", "--size", "48", "32",
                 "--workers", "1", "--preview", str(grid_path), "--preview-rows", "2"]) == 0  # fmt: skip
    grid = cv2.imread(str(grid_path))
    assert grid.shape == (2 * 48 + 2, 6 * 32 + 5 * 2, 3)
    # Its first row, first column is the first image of the dataset.
    first = cv2.imread(str(tmp_path / "g" / "train" / "images" / "000000.png"))
    assert (grid[:48, :32] == first).all()
    assert (out / "val" / "images" / "000001.png").exists()
    # Writing into an existing dataset is refused rather than silently mixing files.
    assert main(["synth", "--out", str(out), "--num", "2", "--workers", "1"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "x"), "--num", "2", "--val-fraction", "1.5"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "y"), "--num", "0"]) == 2
