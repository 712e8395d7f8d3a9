"""Masked image modelling: patchify, the MAE decoder and the normalised-pixel MSE loss (paper §2.2).

The encoder (the Sapiens2 backbone, :meth:`~sapiens2.models.Sapiens2.forward_masked`) sees only the
visible tokens. The decoder projects them to its width, scatters them back onto the full token grid,
fills the hidden slots with a learned mask token, adds positional information (2-D RoPE in every
decoder block, at the decoder's head size) and predicts the pixels of every token's patch. The loss
is the MSE between prediction and per-patch normalised pixels, averaged over hidden tokens only.

A token covers ``stride x stride`` input pixels (16, or 64 for the 4K variant). ``target_scale``
resizes the reconstruction target: the 4K model reconstructs at half resolution (its "2K output"),
so each token predicts ``32 x 32`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sapiens2.nn import RMSNorm, RopePositionEmbedding, TransformerBlock

__all__ = ["MAEConfig", "MAEDecoder", "mae_loss", "mae_targets", "patchify", "unpatchify"]


@dataclass(frozen=True)
class MAEConfig:
    """The reconstruction branch.

    Args:
        decoder_depth, decoder_dim, decoder_heads: the decoder (8 x 512, 16 heads in the paper).
        decoder_ffn_ratio: SwiGLU hidden size / width.
        norm_pix: per-patch mean/variance-normalised pixel targets (He et al. 2022).
        target_scale: reconstruction target resolution relative to the input (1.0; 0.5 gives the
            4K model's 2K target). ``stride * target_scale`` must be a whole number of pixels.
    """

    decoder_depth: int = 8
    decoder_dim: int = 512
    decoder_heads: int = 16
    decoder_ffn_ratio: float = 4.0
    norm_pix: bool = True
    target_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.decoder_depth < 1 or self.decoder_dim < 1:
            raise ValueError("MAE decoder depth and width must be >= 1")
        if self.decoder_dim % (4 * self.decoder_heads):
            raise ValueError(
                f"MAE decoder width {self.decoder_dim} must be divisible by 4 * heads ({self.decoder_heads})"
            )
        if not 0.0 < self.target_scale <= 1.0:
            raise ValueError(f"target_scale must be in (0, 1], got {self.target_scale}")

    def target_patch(self, stride: int) -> int:
        """Pixels per side of one token's reconstruction target."""
        p = stride * self.target_scale
        if abs(p - round(p)) > 1e-6 or round(p) < 1:
            raise ValueError(
                f"target_scale {self.target_scale} gives a non-integer target patch ({p} px) for stride {stride}"
            )
        return round(p)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H/p * W/p, p*p*C)``, patches row-major, pixels ``(py, px, c)``."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, Hp, Wp, py, px, C)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(
    patches: torch.Tensor, grid: tuple[int, int], patch: int, channels: int = 3
) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, Hp*Wp, p*p*C)`` -> ``(B, C, Hp*p, Wp*p)``."""
    b, n, d = patches.shape
    hp, wp = grid
    if n != hp * wp or d != patch * patch * channels:
        raise ValueError(
            f"patches {tuple(patches.shape)} do not match grid {grid}, patch {patch}, {channels} channels"
        )
    x = patches.reshape(b, hp, wp, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, hp * patch, wp * patch)


def mae_targets(
    images: torch.Tensor, stride: int, target_patch: int, norm_pix: bool = True
) -> torch.Tensor:
    """Per-token pixel targets ``(B, N, target_patch**2 * C)`` of normalised images ``(B, C, H, W)``.

    The images are resized (area) when ``target_patch != stride``; with ``norm_pix`` each patch is
    normalised to zero mean and unit variance as in MAE: ``(x - mean) / sqrt(var + 1e-6)``
    with the unbiased variance over the patch's pixels.
    """
    if target_patch != stride:
        h, w = images.shape[-2:]
        size = (h // stride * target_patch, w // stride * target_patch)
        images = F.interpolate(images.float(), size=size, mode="area")
    target = patchify(images.float(), target_patch)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, unbiased=True, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return target


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over hidden tokens: mean over pixels, then over the hidden tokens of the batch.

    Args:
        pred, target: ``(B, N, P)``. mask: ``(B, N)`` bool, True = hidden (the only tokens scored).
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"shapes differ: pred {tuple(pred.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)}"
        )
    per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


class MAEDecoder(nn.Module):
    """The MAE decoder: visible tokens + mask tokens on the full grid -> pixels of every token.

    Args:
        encoder_dim: backbone width D.
        num_prefix: prefix tokens (class + storage) the encoder output starts with; they are kept
            (projected) and attend with the patch tokens, as MAE keeps its class token.
        out_dim: pixels per token (``target_patch**2 * 3``).
        cfg: decoder sizes.
    """

    def __init__(self, encoder_dim: int, num_prefix: int, out_dim: int, cfg: MAEConfig) -> None:
        super().__init__()
        d = cfg.decoder_dim
        self.num_prefix = num_prefix
        self.grad_checkpointing = False
        self.embed = nn.Linear(encoder_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.rope = RopePositionEmbedding(d // cfg.decoder_heads, dtype=torch.float32)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d, cfg.decoder_heads, int(d * cfg.decoder_ffn_ratio), layer_scale_init=None
            )
            for _ in range(cfg.decoder_depth)
        )
        self.norm = RMSNorm(d)
        self.pred = nn.Linear(d, out_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self,
        tokens: torch.Tensor,
        keep_idx: torch.Tensor,
        grid: tuple[int, int],
        *,
        return_hidden: bool = False,
    ):
        """Predicts every token's pixels.

        Args:
            tokens: encoder output ``(B, P + K, D)`` (prefix tokens, then kept patch tokens).
            keep_idx: ``(B, K)`` grid indices of the kept tokens.
            grid: token grid ``(Hp, Wp)``.
            return_hidden: also return the decoder's final patch features ``(B, N, d)``.

        Returns:
            ``(B, Hp*Wp, out_dim)`` predictions (and the hidden features when asked).
        """
        b = tokens.shape[0]
        n = grid[0] * grid[1]
        x = self.embed(tokens)
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix :]
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()
        full = full.scatter(1, keep_idx[..., None].expand(-1, -1, x.shape[-1]), visible)
        x = torch.cat([prefix, full], dim=1)
        rope = self.rope(grid)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, rope, use_reentrant=False)
            else:
                x = blk(x, rope)
        hidden = self.norm(x[:, self.num_prefix :])
        pred = self.pred(hidden)
        return (pred, hidden) if return_hidden else pred
