"""Build tiny, internally consistent datasets in the on-disk format (for the data tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sapiens2.data.formats import PoseImage, PoseInstance, encode_camera, encode_png, pose_json_dict
from sapiens2.data.metadata import keypoints308


def make_sample(rng: np.random.Generator, h: int = 40, w: int = 30) -> dict:
    """One sample: an elliptic 'person' with consistent mask, parts, normals, pointmap, K, albedo."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = w / 2 + rng.uniform(-2, 2), h / 2 + rng.uniform(-2, 2)
    inside = ((xx - cx) / (0.35 * w)) ** 2 + ((yy - cy) / (0.4 * h)) ** 2 < 1
    mask = np.where(inside, 255, 0).astype(np.uint8)
    seg = np.zeros((h, w), np.uint8)
    seg[inside & (xx < cx)] = 6  # Left_Hand on the image-left half
    seg[inside & (xx >= cx)] = 15  # Right_Hand
    seg[inside & (yy < cy - 0.2 * h)] = 3  # Face_Neck on top
    K = np.array(
        [[40.0 + rng.uniform(0, 5), 0, (w - 1) / 2 + 1.5], [0, 41.0, (h - 1) / 2 - 0.5], [0, 0, 1]]
    )
    depth = 2.0 + 0.3 * np.cos(xx / w * np.pi)
    pm = np.stack(
        [(xx - K[0, 2]) * depth / K[0, 0], (yy - K[1, 2]) * depth / K[1, 1], depth], axis=-1
    )
    pointmap = np.where(inside[..., None], pm, 0).astype(np.float32)
    n = rng.normal(size=(h, w, 3))
    n[..., 2] = -np.abs(n[..., 2]) - 0.5
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    normal = np.where(inside[..., None], n, 0).astype(np.float32)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    albedo = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return {
        "image": image,
        "mask": mask,
        "seg": seg,
        "normal": normal,
        "pointmap": pointmap,
        "K": K,
        "albedo": albedo,
    }


def make_keypoints(rng: np.random.Generator, h: int, w: int, n_labelled: int = 60) -> np.ndarray:
    """(308, 3) keypoints with ``n_labelled`` labelled points spread over the central image area."""
    kp = np.zeros((keypoints308().num_keypoints, 3), np.float32)
    idx = rng.choice(kp.shape[0], size=n_labelled, replace=False)
    idx = np.union1d(idx, np.arange(0, 15))  # always the main body joints
    kp[idx, 0] = rng.uniform(0.2 * w, 0.8 * w, size=len(idx))
    kp[idx, 1] = rng.uniform(0.1 * h, 0.9 * h, size=len(idx))
    kp[idx, 2] = rng.choice([1, 2], size=len(idx))
    return kp


def write_dataset(
    root: Path, n: int = 3, split: str = "train", h: int = 40, w: int = 30, seed: int = 0
) -> list[dict]:
    """Write ``n`` samples (ids ``s000``...) with every folder and a pose.json; returns the arrays."""
    rng = np.random.default_rng(seed)
    d = root / split
    for sub in ("images", "mask", "seg", "normal", "pointmap", "camera", "albedo"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    samples, pose_images = [], []
    for i in range(n):
        s = make_sample(rng, h, w)
        sid = f"s{i:03d}"
        (d / "images" / f"{sid}.png").write_bytes(encode_png(s["image"]))
        (d / "mask" / f"{sid}.png").write_bytes(encode_png(s["mask"]))
        (d / "seg" / f"{sid}.png").write_bytes(encode_png(s["seg"]))
        np.save(d / "normal" / f"{sid}.npy", s["normal"])
        np.save(d / "pointmap" / f"{sid}.npy", s["pointmap"])
        (d / "camera" / f"{sid}.json").write_bytes(encode_camera(s["K"], w, h))
        (d / "albedo" / f"{sid}.png").write_bytes(encode_png(s["albedo"]))
        insts = []
        for j in range(1 + i % 2):  # 1 or 2 people
            kp = make_keypoints(rng, h, w)
            lab = kp[kp[:, 2] > 0]
            x0, y0 = lab[:, :2].min(0)
            x1, y1 = lab[:, :2].max(0)
            insts.append(PoseInstance(100 * i + j, i, np.array([x0, y0, x1 - x0, y1 - y0]), kp))
        s["keypoints"] = [p.keypoints for p in insts]
        pose_images.append(PoseImage(i, f"images/{sid}.png", w, h, tuple(insts)))
        s["id"] = sid
        samples.append(s)
    (d / "pose.json").write_text(json.dumps(pose_json_dict(pose_images)))
    return samples
