"""Binary PLY point-cloud writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _ply(points: np.ndarray, colors: np.ndarray | None) -> tuple[bytes, np.ndarray]:
    """The header and the vertex records of a binary little-endian PLY."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape:
            raise ValueError(f"colors must match points {points.shape}, got {colors.shape}")
        if colors.dtype != np.uint8:
            raise ValueError(f"colors must be uint8 RGB, got {colors.dtype}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(len(points), dtype=fields)
    rec["x"], rec["y"], rec["z"] = points.T
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}"]
    header += ["property float x", "property float y", "property float z"]
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = colors.T
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii"), rec


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY point cloud.

    Args:
        points: ``(N, 3)`` float XYZ (written as float32).
        colors: ``(N, 3)`` uint8 RGB, optional.

    Returns:
        The path written.
    """
    header, rec = _ply(points, colors)
    path = Path(path)
    with path.open("wb") as f:
        f.write(header)
        rec.tofile(f)  # no bytes copy of the (N, 15-byte) records
    return path


def ply_bytes(points: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """The bytes :func:`write_ply` writes."""
    header, rec = _ply(points, colors)
    return header + rec.tobytes()


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PLY written by :func:`write_ply`: points ``(N, 3)`` float32, colors ``(N, 3)`` uint8 or None."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    if lines[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    n = int(next(ln for ln in lines if ln.startswith("element vertex")).split()[-1])
    has_color = any(ln.endswith(" red") for ln in lines)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if has_color:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.frombuffer(data[end:], dtype=fields, count=n)
    pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    cols = np.stack([rec["red"], rec["green"], rec["blue"]], axis=1) if has_color else None
    return pts, cols
