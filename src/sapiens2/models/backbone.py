"""The Sapiens2 vision transformer backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sapiens2.models.configs import ArchConfig
from sapiens2.nn import (
    PatchEmbed,
    RMSNorm,
    RopePositionEmbedding,
    TransformerBlock,
    WindowTokenizer,
)

OutputFormat = Literal["NCHW", "NLC", "raw"]


class TokenSplit(NamedTuple):
    """A token sequence split into its parts: ``cls (B, D) | None``, ``storage (B, R, D)``,
    ``patches (B, Hp*Wp, D)``."""

    cls: torch.Tensor | None
    storage: torch.Tensor
    patches: torch.Tensor


class Sapiens2(nn.Module):
    """Sapiens2 ViT: patch embedding, optional 4K windowed tokenizer, [CLS, storage, patch]
    tokens, pre-norm blocks with 2-D RoPE and grouped-query attention, final RMSNorm.

    State-dict keys are those of the official pretrain checkpoints (``sapiens/backbones/sapiens2.py``).

    Args:
        cfg: the architecture (see :mod:`sapiens2.models.configs`).
        device, dtype: where to create the parameters (``"meta"`` builds without memory; call
            :meth:`init_weights` after ``to_empty``).
    """

    def __init__(self, cfg: ArchConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        self.cfg = cfg
        dd = {"device": device, "dtype": dtype}
        d = cfg.embed_dim
        self.embed_dim = d
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.grad_checkpointing = False
        self.cls_token = nn.Parameter(torch.empty(1, 1, d, **dd)) if cfg.with_cls_token else None
        self.storage_tokens = (
            nn.Parameter(torch.empty(1, cfg.num_storage_tokens, d, **dd))
            if cfg.num_storage_tokens
            else None
        )
        self.patch_embed = PatchEmbed(cfg.in_channels, d, cfg.patch_size, **dd)
        self.rope_embed = RopePositionEmbedding(
            cfg.head_dim,
            base=cfg.rope_base,
            normalize_coords=cfg.rope_normalize_coords,
            dtype=cfg.torch_rope_dtype,
            device=device,
        )
        self.tokenizer = (
            WindowTokenizer(
                d,
                cfg.num_heads,
                cfg.ffn_dim,
                cfg.tokenizer_depth,
                window=cfg.tokenizer_window,
                chunk_size=cfg.tokenizer_chunk_size,
                qkv_bias=cfg.qkv_bias,
                norm_eps=cfg.norm_eps,
                **dd,
            )
            if cfg.use_tokenizer
            else None
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d,
                cfg.num_heads,
                cfg.ffn_dim,
                num_kv_heads=cfg.kv_heads(i),
                qk_norm=cfg.qk_norm,
                qkv_bias=cfg.qkv_bias,
                proj_bias=cfg.proj_bias,
                ffn_bias=cfg.ffn_bias,
                layer_scale_init=cfg.layer_scale_init,
                norm_eps=cfg.norm_eps,
                **dd,
            )
            for i in range(cfg.depth)
        )
        self.ln1 = RMSNorm(d, cfg.norm_eps, **dd) if cfg.final_norm else None
        if device is None or torch.device(device).type != "meta":
            self.init_weights()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init as the official code: trunc-normal(0.02) weights and tokens, zero biases,
        unit norms, LayerScale at its init value, RoPE periods recomputed."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for p in (self.cls_token, self.storage_tokens):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block (and per tokenizer chunk) while training."""
        self.grad_checkpointing = enable
        if self.tokenizer is not None:
            self.tokenizer.grad_checkpointing = enable

    # ------------------------------------------------------------------ helpers
    def check_input(self, x: torch.Tensor) -> None:
        """Raises ``ValueError`` naming the problem for a wrongly shaped input."""
        cfg = self.cfg
        if x.ndim != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"expected {cfg.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        h, w = x.shape[-2:]
        if h % cfg.stride or w % cfg.stride or h == 0 or w == 0:
            raise ValueError(
                f"input size {h}x{w} must be a positive multiple of {cfg.stride} for {cfg.name}"
            )

    def split_tokens(self, tokens: torch.Tensor) -> TokenSplit:
        """Splits a ``(B, P + N, D)`` sequence into class, storage and patch tokens."""
        c = int(self.cls_token is not None)
        return TokenSplit(
            tokens[:, 0] if c else None,
            tokens[:, c : self.num_prefix_tokens],
            tokens[:, self.num_prefix_tokens :],
        )

    def _prepare_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self.check_input(x)
        tokens, grid = self.patch_embed(x)
        if self.tokenizer is not None:
            tokens, grid = self.tokenizer(tokens, grid)
        b = tokens.shape[0]
        prefix = [
            p.expand(b, -1, -1).to(tokens.dtype)
            for p in (self.cls_token, self.storage_tokens)
            if p is not None
        ]
        return torch.cat([*prefix, tokens], dim=1), grid

    def _run_block(self, blk: nn.Module, x: torch.Tensor, rope) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, x, rope, use_reentrant=False)
        return blk(x, rope)

    def _format(self, x: torch.Tensor, grid: tuple[int, int], fmt: OutputFormat) -> torch.Tensor:
        if fmt == "raw":
            return x
        patches = x[:, self.num_prefix_tokens :]
        if fmt == "NLC":
            return patches
        b, _, d = patches.shape
        return patches.transpose(1, 2).reshape(b, d, *grid)  # (B, D, Hp, Wp)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Full token sequence ``(B, P + Hp*Wp, D)`` after the final norm, P prefix tokens first."""
        tokens, grid = self._prepare_tokens(x)
        rope = self.rope_embed(grid)
        for blk in self.blocks:
            tokens = self._run_block(blk, tokens, rope)
        return self.ln1(tokens) if self.ln1 is not None else tokens

    def forward_masked(self, x: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Runs the blocks on a subset of the patch tokens (masked image modelling).

        The patch tokens are computed as in :meth:`forward_features` (for the 4K variant after the
        windowed tokenizer, so masked windows are dropped after the local stage), then only the
        tokens at ``keep_idx`` are kept and each keeps its own 2-D RoPE position. With ``keep_idx``
        covering every patch in order this equals :meth:`forward_features`.

        Args:
            x: ``(B, 3, H, W)`` normalised images.
            keep_idx: ``(B, K)`` int64 indices into the row-major ``Hp*Wp`` token grid.

        Returns:
            ``(B, P + K, D)`` after the final norm: P prefix tokens, then the kept patch tokens in
            the order of ``keep_idx``.
        """
        tokens, grid = self._prepare_tokens(x)
        n = grid[0] * grid[1]
        b = tokens.shape[0]
        if keep_idx.ndim != 2 or keep_idx.shape[0] != b:
            raise ValueError(f"keep_idx must be (B={b}, K), got shape {tuple(keep_idx.shape)}")
        if keep_idx.numel() and (int(keep_idx.min()) < 0 or int(keep_idx.max()) >= n):
            raise ValueError(f"keep_idx out of range for a {grid[0]}x{grid[1]} token grid")
        p = self.num_prefix_tokens
        patches = tokens[:, p:].gather(1, keep_idx[..., None].expand(-1, -1, tokens.shape[-1]))
        tokens = torch.cat([tokens[:, :p], patches], dim=1)
        sin, cos = self.rope_embed(grid)  # (N, hd) each
        rope = (sin[keep_idx].unsqueeze(1), cos[keep_idx].unsqueeze(1))  # (B, 1, K, hd)
        for blk in self.blocks:
            tokens = self._run_block(blk, tokens, rope)
        return self.ln1(tokens) if self.ln1 is not None else tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The final normalised patch feature map ``(B, D, H/16, W/16)`` (4K: ``H/64, W/64``)."""
        h, w = x.shape[-2:] if x.ndim == 4 else (0, 0)
        grid = (h // self.cfg.stride, w // self.cfg.stride)
        return self._format(self.forward_features(x), grid, "NCHW")

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: OutputFormat = "NCHW",
    ) -> list[torch.Tensor]:
        """Outputs of chosen blocks (as timm's ``forward_intermediates``).

        Args:
            x: ``(B, 3, H, W)`` normalised images.
            indices: an int ``n`` takes the last ``n`` blocks; a sequence takes those block indices
                (negative counts from the end); None takes the last block.
            norm: apply the final norm to every returned output. The last block's output is
                always returned normalised (as the official ``out_indices`` do).
            output_fmt: ``"NCHW"`` feature maps, ``"NLC"`` patch tokens, ``"raw"`` the full
                sequence including the class and storage tokens.

        Returns:
            One tensor per requested block, in block order.
        """
        depth = len(self.blocks)
        if indices is None:
            wanted = [depth - 1]
        elif isinstance(indices, int):
            wanted = list(range(depth - indices, depth))
        else:
            wanted = sorted({i + depth if i < 0 else i for i in indices})
        if not wanted or wanted[0] < 0 or wanted[-1] >= depth:
            raise IndexError(f"block indices {indices} out of range for depth {depth}")
        tokens, grid = self._prepare_tokens(x)
        rope = self.rope_embed(grid)
        outs = []
        for i, blk in enumerate(self.blocks[: wanted[-1] + 1]):
            tokens = self._run_block(blk, tokens, rope)
            if i in wanted:
                y = tokens
                if self.ln1 is not None and (norm or i == depth - 1):
                    y = self.ln1(y)
                outs.append(self._format(y, grid, output_fmt))
        return outs
