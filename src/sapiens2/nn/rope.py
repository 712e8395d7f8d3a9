"""Axial 2-D rotary position embedding (DINOv3 style), as used by Sapiens2.

The official model computes everything here in **bfloat16** by default: the periods, the token
coordinates, the angles and their sine/cosine, and the rotation itself, after rounding q and k to
bfloat16 (even in a float32 forward pass). The released weights were trained that way, so this is
the default; ``dtype=torch.float32`` is available for new training.

Exported graphs (``torch.export``, and ONNX made from it) keep the recipe in a portable form: the
tables are constants (:meth:`RopePositionEmbedding.freeze`) and the rotation is float32 arithmetic
with every bfloat16 rounding written as a cast, because runtimes such as ONNX Runtime have no
bfloat16 arithmetic on CPU. The numbers are the same (see :func:`_rotate_with_casts`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

CoordNorm = Literal["separate", "max", "min"]


def rope_periods(head_dim: int, base: float, dtype: torch.dtype, device=None) -> torch.Tensor:
    """``base ** (2j / (head_dim/2))`` for ``j < head_dim/4``, every step in ``dtype``."""
    j = torch.arange(head_dim // 4, dtype=dtype, device=device)
    return base ** (2 * j / (head_dim // 2))


class RopePositionEmbedding(nn.Module):
    """Produces ``(sin, cos)`` tables of shape ``(Hp*Wp, head_dim)`` for a token grid.

    Layout of the last dimension: ``[row | col | row | col]`` angles, each block ``head_dim/4`` wide,
    so that rotation pairs ``(d, d + head_dim/2)`` share one angle.

    Args:
        head_dim: per-head channel count (divisible by 4).
        base: period base (100 in Sapiens2).
        normalize_coords: ``"separate"`` divides rows by Hp and columns by Wp; ``"max"``/``"min"``
            divide both by ``max``/``min`` of (Hp, Wp).
        dtype: the dtype of every RoPE computation (bfloat16 in the released models).
    """

    def __init__(
        self,
        head_dim: int,
        *,
        base: float = 100.0,
        normalize_coords: CoordNorm = "separate",
        dtype: torch.dtype = torch.bfloat16,
        device=None,
    ) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs head_dim divisible by 4, got {head_dim}")
        if normalize_coords not in ("separate", "max", "min"):
            raise ValueError(f"unknown RoPE coordinate normalisation {normalize_coords!r}")
        self.head_dim = head_dim
        self.base = base
        self.normalize_coords = normalize_coords
        self.rope_dtype = dtype
        # Persistent: the official checkpoints carry it (in bfloat16).
        self.register_buffer("periods", torch.empty(head_dim // 4, dtype=dtype, device=device))
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.frozen_grid: tuple[int, int] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.periods.device.type != "meta":
            with torch.no_grad():
                self.periods.copy_(rope_periods(self.head_dim, self.base, self.rope_dtype))
        self._cache.clear()

    def _coords(self, hp: int, wp: int, device) -> torch.Tensor:
        dd = {"dtype": self.rope_dtype, "device": device}
        if self.normalize_coords == "separate":
            dh, dw = hp, wp
        elif self.normalize_coords == "max":
            dh = dw = max(hp, wp)
        else:
            dh = dw = min(hp, wp)
        ch = torch.arange(0.5, hp, **dd) / dh
        cw = torch.arange(0.5, wp, **dd) / dw
        coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)
        return 2.0 * coords - 1.0  # (HW, 2) in (-1, 1), [:, 0] = row

    def forward(self, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        hp, wp = grid
        if self.frozen_grid is not None:
            if (hp, wp) != self.frozen_grid:
                raise ValueError(
                    f"RoPE tables are frozen for a {self.frozen_grid[0]}x{self.frozen_grid[1]} "
                    f"token grid, got {hp}x{wp}"
                )
            return self.frozen_sin, self.frozen_cos
        periods = self.periods
        # Inference tensors (a model built under torch.inference_mode) have no version counter.
        version = 0 if periods.is_inference() else periods._version
        key = (hp, wp, periods.device, periods.data_ptr(), version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        out = self._tables(hp, wp, periods)
        if len(self._cache) > 8:
            self._cache.clear()
        self._cache[key] = out
        return out

    def _tables(self, hp: int, wp: int, periods: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        periods = periods.to(self.rope_dtype)
        coords = self._coords(hp, wp, periods.device)
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # (HW, 2, hd/4)
        angles = angles.flatten(1, 2).tile(2)  # (HW, hd) = [row | col | row | col]
        return torch.sin(angles), torch.cos(angles)

    @torch.no_grad()
    def freeze(self, grid: tuple[int, int]) -> None:
        """Computes the tables of ``grid`` now and returns them from every later call (other grids
        are an error) until :meth:`unfreeze`: a traced graph then holds them as constants.

        The tables are non-persistent buffers (``frozen_sin``, ``frozen_cos``): the state dict
        does not change.
        """
        sin, cos = self._tables(*grid, self.periods)
        self.register_buffer("frozen_sin", sin, persistent=False)
        self.register_buffer("frozen_cos", cos, persistent=False)
        self.frozen_grid = (int(grid[0]), int(grid[1]))

    def unfreeze(self) -> None:
        """Back to computing (and caching) the tables of each grid."""
        if self.frozen_grid is not None:
            del self.frozen_sin, self.frozen_cos
            self.frozen_grid = None

    def _apply(self, fn, recurse=True):  # .to()/.cuda() invalidate the cached tables
        self._cache.clear()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, dtype={self.rope_dtype}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates the last ``sin.shape[-2]`` tokens of ``q`` and ``k`` (``(B, heads, N, hd)``).

    ``x * cos + rotate_half(x) * sin`` with each product and the sum rounded to the table dtype,
    as the official code computes it. Leading (prefix) tokens are not rotated. q and k are cast to
    the table dtype for the rotation and cast back afterwards, which rounds every token (prefix
    included) to that dtype. Tables are ``(HW, hd)`` or broadcastable to ``(B, 1, HW, hd)``.
    """
    half = sin.shape[-1] // 2
    if sin.dtype in (torch.bfloat16, torch.float16) and torch.compiler.is_exporting():
        low, sin, cos = sin.dtype, sin.float(), cos.float()  # exact
        sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        return _rotate_with_casts(q, sin_signed, cos, low), _rotate_with_casts(
            k, sin_signed, cos, low
        )
    # rotate_half(x) * sin == swap_halves(x) * [-sin_1 | sin_2], exactly (negation commutes
    # with rounding), which saves the negation pass over q and k.
    sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return _rotate(q, sin_signed, cos), _rotate(k, sin_signed, cos)


def _rotate(x: torch.Tensor, sin_signed: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    rope_dtype = cos.dtype
    prefix = x.shape[-2] - cos.shape[-2]
    half = cos.shape[-1] // 2
    body = x[..., prefix:, :].to(rope_dtype)
    swapped = torch.cat([body[..., half:], body[..., :half]], dim=-1)
    rotated = body * cos
    rotated += swapped.mul_(sin_signed)
    if prefix == 0 and x.dtype == rope_dtype:
        return rotated
    # One pass writes both parts back in x's dtype (no concatenation, no second cast), into a
    # contiguous (B, heads, N, hd) buffer: q and k usually arrive as transposed views of the
    # (B, N, heads, hd) projections, and CPU attention reads head-major rows faster (~4% a block).
    out = x.new_empty(x.shape)
    out[..., :prefix, :] = x[..., :prefix, :].to(rope_dtype)
    out[..., prefix:, :] = rotated
    return out


def _rotate_with_casts(
    x: torch.Tensor, sin_signed: torch.Tensor, cos: torch.Tensor, low: torch.dtype
) -> torch.Tensor:
    """:func:`_rotate` as float32 arithmetic whose every rounding to ``low`` is a cast (the tables
    are float32 holding ``low`` values).

    The same numbers: a product of two bfloat16 (or float16) values is exact in float32, and
    PyTorch computes a bfloat16 sum or product in float32 and rounds it (round to nearest even), as
    each ``.to(low).float()`` here does. Used while exporting, for runtimes without bfloat16
    arithmetic.
    """

    def rounded(t: torch.Tensor) -> torch.Tensor:
        return t.to(low).float()

    prefix = x.shape[-2] - cos.shape[-2]
    half = cos.shape[-1] // 2
    xr = rounded(x)  # every token is rounded, as in _rotate
    body = xr[..., prefix:, :]
    swapped = torch.cat([body[..., half:], body[..., :half]], dim=-1)
    rotated = rounded(rounded(body * cos) + rounded(swapped * sin_signed))
    return torch.cat([xr[..., :prefix, :], rotated], dim=-2).to(x.dtype)
