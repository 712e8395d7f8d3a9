"""Inferring the architecture, the task and the head widths of a checkpoint from tensor shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace

import torch

from sapiens2.checkpoints.errors import CheckpointError, list_names
from sapiens2.models.configs import ARCHS, ArchConfig
from sapiens2.models.heads import (
    DenseHeadConfig,
    PointmapHeadConfig,
    PoseHeadConfig,
    SegHeadConfig,
)
from sapiens2.models.task import HeadConfig, Task, head_spec, head_tasks

StateDict = Mapping[str, torch.Tensor]


def _indices(sd: StateDict, prefix: str) -> list[int]:
    """Sorted distinct integers ``i`` of keys ``<prefix><i>.`` (Sequential / ModuleList indices)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pat.match(k))})


def _shape(sd: StateDict, key: str, rank: int | None = None) -> tuple[int, ...]:
    """The shape of ``sd[key]``, checked: a tensor of ``rank`` dimensions, all positive."""
    if key not in sd:
        raise CheckpointError(f"missing key {key}")
    value = sd[key]
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{key} is a {type(value).__name__}, not a tensor")
    shape = tuple(value.shape)
    if rank is not None and len(shape) != rank:
        raise CheckpointError(f"{key} has shape {shape}; expected {rank} dimensions")
    if not all(d > 0 for d in shape):
        raise CheckpointError(f"{key} has an empty dimension: shape {shape}")
    return shape


def check_is_sapiens2(sd: StateDict) -> None:
    """Raises a CheckpointError for a v1 checkpoint or something that is not Sapiens2 at all."""
    if "pos_embed" in sd or any(re.match(r"layers\.\d+\.attn\.qkv\.", k) for k in sd):
        raise CheckpointError(
            "this is a Sapiens (v1) checkpoint (learned pos_embed, fused qkv, 'layers.*' keys); "
            "sapiens2 loads Sapiens2 checkpoints only"
        )
    if "patch_embed.projection.weight" not in sd or not any(k.startswith("blocks.") for k in sd):
        raise CheckpointError(
            "not a Sapiens2 checkpoint: no 'patch_embed.projection.weight' / 'blocks.*' keys "
            f"(found e.g. {list_names(list(sd)[:8])})"
        )


def infer_arch(sd: StateDict) -> ArchConfig:
    """The backbone architecture of a backbone state dict (keys without ``backbone.``).

    A known arch is returned by its table name; other shapes give a ``custom_*`` config.
    """
    check_is_sapiens2(sd)
    dim, in_ch, patch, _ = _shape(sd, "patch_embed.projection.weight", 4)
    depth_ids = _indices(sd, "blocks.")
    depth = depth_ids[-1] + 1
    if depth_ids != list(range(depth)):
        raise CheckpointError(f"block indices are not contiguous: {depth_ids}")
    if "blocks.0.attn.q_norm.weight" in sd:
        head_dim = _shape(sd, "blocks.0.attn.q_norm.weight", 1)[0]
    elif "rope_embed.periods" in sd:
        head_dim = 4 * _shape(sd, "rope_embed.periods", 1)[0]
    else:
        raise CheckpointError("cannot tell the head dimension: no q_norm weight nor RoPE periods")
    if dim % head_dim:
        raise CheckpointError(f"width {dim} is not a multiple of the head dimension {head_dim}")
    heads = dim // head_dim
    kv = [_shape(sd, f"blocks.{i}.attn.wk.weight", 2)[0] // head_dim for i in range(depth)]
    early = next((i for i, k in enumerate(kv) if k != heads), depth)
    late = next((i for i, k in enumerate(reversed(kv)) if k != heads), depth)
    middle = set(kv[early : depth - late])
    if len(middle) > 1:
        raise CheckpointError(f"unsupported attention schedule (kv heads per block: {kv})")
    num_kv = middle.pop() if middle else None
    rope_dtype = "bf16"
    if "rope_embed.periods" in sd and sd["rope_embed.periods"].dtype == torch.float32:
        rope_dtype = "fp32"
    cfg = ArchConfig(
        name=f"custom_d{dim}_l{depth}",
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        ffn_dim=_shape(sd, "blocks.0.ffn.w3.weight", 2)[1],
        num_kv_heads=num_kv,
        full_attn_early=early if num_kv else 8,
        full_attn_late=late if num_kv else 8,
        patch_size=patch,
        in_channels=in_ch,
        qk_norm="blocks.0.attn.q_norm.weight" in sd,
        qkv_bias="blocks.0.attn.wq.bias" in sd,
        proj_bias="blocks.0.attn.proj.bias" in sd,
        ffn_bias="blocks.0.ffn.w12.bias" in sd,
        with_cls_token="cls_token" in sd,
        num_storage_tokens=_shape(sd, "storage_tokens", 3)[1] if "storage_tokens" in sd else 0,
        layer_scale_init=1e-4 if "blocks.0.attn.gamma.weight" in sd else None,
        rope_dtype=rope_dtype,
        final_norm="ln1.weight" in sd,
    )
    if "tokenizer.local_pos_embed" in sd:
        window = math.isqrt(_shape(sd, "tokenizer.local_pos_embed", 3)[1] - 1)
        if window < 1:
            raise CheckpointError("tokenizer.local_pos_embed holds no window positions")
        cfg = replace(
            cfg,
            use_tokenizer=True,
            tokenizer_depth=len(_indices(sd, "tokenizer.blocks.")),
            tokenizer_window=window,
            img_size=(1024 * window, 768 * window),
        )
    return _known_name(cfg)


def _known_name(cfg: ArchConfig) -> ArchConfig:
    for known in ARCHS.values():
        if (known.embed_dim, known.depth, known.num_heads) != (
            cfg.embed_dim,
            cfg.depth,
            cfg.num_heads,
        ):
            continue
        # Fields a checkpoint cannot show are taken from the table before comparing.
        candidate = replace(
            cfg,
            name=known.name,
            img_size=known.img_size,
            rope_base=known.rope_base,
            tokenizer_depth=cfg.tokenizer_depth if cfg.use_tokenizer else known.tokenizer_depth,
            full_attn_early=cfg.full_attn_early if cfg.num_kv_heads else known.full_attn_early,
            full_attn_late=cfg.full_attn_late if cfg.num_kv_heads else known.full_attn_late,
            num_kv_heads=cfg.num_kv_heads if cfg.num_kv_heads else known.num_kv_heads,
        )
        if candidate == known:
            return known
    return cfg


def split_task_state_dict(sd: StateDict) -> tuple[dict, dict]:
    """``(backbone_sd, head_sd)`` with the ``backbone.`` / ``decode_head.`` prefixes removed.

    A plain backbone checkpoint gives an empty head dict. Keys under neither prefix in a task
    checkpoint raise an error.
    """
    if not any(k.startswith(("backbone.", "decode_head.")) for k in sd):
        return dict(sd), {}
    backbone = {k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}
    head = {k[12:]: v for k, v in sd.items() if k.startswith("decode_head.")}
    other = [k for k in sd if not k.startswith(("backbone.", "decode_head."))]
    if other:
        raise CheckpointError(
            f"unexpected keys outside backbone./decode_head.: {list_names(other)}"
        )
    return backbone, head


def detect_task(head_sd: StateDict) -> Task | None:
    """The task of a head state dict (keys without ``decode_head.``), None when empty."""
    if not head_sd:
        return None
    keys = {t: head_spec(t).predictor_key for t in head_tasks()}
    found = [t for t, key in keys.items() if f"{key}.weight" in head_sd]
    if len(found) != 1:
        raise CheckpointError(
            "cannot tell the task of this head: expected exactly one of "
            f"{', '.join(k + '.weight' for k in keys.values())}; keys are e.g. "
            f"{list_names(head_sd)}"
        )
    return found[0]


def _stages(sd: StateDict, prefix: str, transpose: bool = False) -> tuple[tuple, tuple]:
    """Output channels and kernel sizes of ``[conv, norm, act]`` stages under ``prefix``."""
    chans, kernels = [], []
    for i in _indices(sd, prefix):
        shape = _shape(sd, f"{prefix}{i}.weight", 4) if f"{prefix}{i}.weight" in sd else None
        if shape is None:
            continue  # a norm with weights (albedo), not a conv
        chans.append(shape[1] if transpose else shape[0])
        kernels.append(shape[-1])
    return tuple(chans), tuple(kernels)


def infer_head(task: Task, sd: StateDict, token_grid: tuple[int, int] | None = None) -> HeadConfig:
    """Head widths of a ``decode_head`` state dict (keys without the prefix).

    ``token_grid`` (pointmap only) overrides the grid inferred from the scale MLP; our saved files
    record it in their metadata.
    """
    spec = head_spec(task)
    out = _shape(sd, f"{spec.predictor_key}.weight", 4)[0]
    if spec.config_cls in (PoseHeadConfig, SegHeadConfig):  # the deconv heads
        deconv, deconv_k = _stages(sd, "deconv_layers.", transpose=True)
        conv, conv_k = _stages(sd, "conv_layers.")
        if spec.config_cls is PoseHeadConfig:
            return PoseHeadConfig(deconv, deconv_k, conv, conv_k, num_keypoints=out)
        return SegHeadConfig(deconv, deconv_k, conv, conv_k, num_classes=out)
    ups = [_shape(sd, f"upsample_blocks.{j}.0.weight", 4) for j in _indices(sd, "upsample_blocks.")]
    if not ups:
        raise CheckpointError(f"{task} head without upsample_blocks")
    conv, conv_k = _stages(sd, "conv_layers.")
    dense = {
        "upsample_channels": tuple(s[0] // 4 for s in ups),
        "upsample_kernel": ups[0][-1],
        "conv_channels": conv,
        "conv_kernels": conv_k,
        "out_channels": out,
    }
    if spec.config_cls is not PointmapHeadConfig:
        return DenseHeadConfig(**dense)
    scale, _ = _stages(sd, "scale_conv_layers.")
    linear = [
        _shape(sd, f"scale_final_layer.{i}.weight", 2) for i in _indices(sd, "scale_final_layer.")
    ]
    if not scale or not linear:
        raise CheckpointError(
            "pointmap head without its scale branch (scale_conv_layers, scale_final_layer)"
        )
    return PointmapHeadConfig(
        **dense,
        scale_conv_channels=scale,
        scale_hidden=tuple(s[0] for s in linear[:-1]),
        token_grid=token_grid or _token_grid(linear[0][1], scale[-1], len(scale)),
    )


def _token_grid(flat: int, channels: int, halvings: int) -> tuple[int, int]:
    """The 3:4 (W:H) token grid whose ``halvings`` stride-2 reductions flatten to ``flat``.

    The flatten size only fixes the reduced grid's area; the released models (and the fixtures)
    use 4:3 portrait inputs divisible by 2**halvings, which makes the answer unique.
    """
    if flat % channels:
        raise CheckpointError(f"scale MLP input {flat} is not a multiple of {channels} channels")
    area = flat // channels
    step = 2**halvings
    for k in range(1, 257):
        gh, gw = 4 * k, 3 * k
        if gh % step or gw % step:
            continue
        if (gh // step) * (gw // step) == area:
            return gh, gw
    raise CheckpointError(f"cannot find a 4:3 token grid for a scale MLP input of {flat}")
