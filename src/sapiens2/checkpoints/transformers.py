"""Hugging Face transformers layout: the official <-> transformers parameter names, the
``config.json`` of a Sapiens2 repo, and folders that ``transformers`` loads.

A transformers-format folder (or hub repo) holds ``config.json`` (``model_type: "sapiens2"``) and
``model.safetensors``. The weights may carry the official names (the hub files are byte copies of
the official checkpoints, and transformers' default ``save_pretrained`` writes them back that way,
without ``rope_embed.periods``) or transformers' own names (``save_original_format=False``).
:func:`adapt_transformers_checkpoint` turns either into an official state dict;
:func:`save_pretrained` writes a folder that ``transformers.AutoModel.from_pretrained`` and the
``Sapiens2For*`` classes load.

The names follow transformers' conversion mapping (``transformers/conversion_mapping.py``, entry
``sapiens2`` and the ``Sapiens2For*`` entries, transformers 5.25): every tensor is copied
unchanged except the SwiGLU input projection ``ffn.w12``, whose first half is ``gate_proj`` and
second half ``up_proj``, and the RoPE periods, which transformers does not store (it computes
float32 frequencies from ``rope_theta``; our bfloat16 periods are recomputed on the way back).

Numerics: transformers runs RoPE in float32 where the released models round q, k, the angles and
the rotation to bfloat16 (see :mod:`sapiens2.nn.rope`), so its outputs differ from ours by that
rounding (docs/export.md has the measured size).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from sapiens2.checkpoints.errors import CheckpointError, list_names
from sapiens2.models import Sapiens2, TaskModel
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import DenseHeadConfig, PointmapHeadConfig, PoseHeadConfig, SegHeadConfig
from sapiens2.models.task import head_spec
from sapiens2.nn.rope import rope_periods

logger = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "sapiens2"

# transformers class of each task model (None: the backbone). A task transformers has no class
# for (albedo) cannot be written in this layout.
TRANSFORMERS_CLASSES: dict[str | None, str] = {
    None: "Sapiens2Model",
    "pose": "Sapiens2ForPoseEstimation",
    "seg": "Sapiens2ForSemanticSegmentation",
    "normal": "Sapiens2ForNormalEstimation",
    "pointmap": "Sapiens2ForPointmapEstimation",
    "matting": "Sapiens2ForImageMatting",
}
_TASK_OF_CLASS = {cls: task for task, cls in TRANSFORMERS_CLASSES.items()}
# Other backbone classes of the same checkpoints.
_TASK_OF_CLASS["Sapiens2Backbone"] = None

# ---------------------------------------------------------------------------- the name map
# Pairs of (official, transformers) name patterns. Placeholders: {i} a block index, {p} weight or
# bias, {j} a head stage (transformers ModuleList index) and {k} = 3 * j, the index of that
# stage's conv in the official [conv, norm, activation] nn.Sequential.
_BACKBONE = (
    ("cls_token", "embeddings.cls_token"),
    ("storage_tokens", "embeddings.register_tokens"),
    ("patch_embed.projection.{p}", "embeddings.patch_embeddings.{p}"),
    ("blocks.{i}.ln1.weight", "model.layer.{i}.norm1.weight"),
    ("blocks.{i}.ln2.weight", "model.layer.{i}.norm2.weight"),
    ("blocks.{i}.attn.wq.{p}", "model.layer.{i}.attention.q_proj.{p}"),
    ("blocks.{i}.attn.wk.{p}", "model.layer.{i}.attention.k_proj.{p}"),
    ("blocks.{i}.attn.wv.{p}", "model.layer.{i}.attention.v_proj.{p}"),
    ("blocks.{i}.attn.proj.{p}", "model.layer.{i}.attention.o_proj.{p}"),
    ("blocks.{i}.attn.q_norm.weight", "model.layer.{i}.attention.q_norm.weight"),
    ("blocks.{i}.attn.k_norm.weight", "model.layer.{i}.attention.k_norm.weight"),
    ("blocks.{i}.attn.gamma.weight", "model.layer.{i}.layer_scale1.lambda1"),
    ("blocks.{i}.ffn.w3.{p}", "model.layer.{i}.mlp.down_proj.{p}"),
    ("ln1.weight", "norm.weight"),
)
# ffn.w12 = [gate_proj; up_proj] along dim 0.
_W12 = (
    "blocks.{i}.ffn.w12.{p}",
    ("model.layer.{i}.mlp.gate_proj.{p}", "model.layer.{i}.mlp.up_proj.{p}"),
)
_PERIODS = "rope_embed.periods"

_DECONV_HEAD = (
    ("decode_head.deconv_layers.{k}.weight", "decode_head.upsample_layers.{j}.convolution.weight"),
    ("decode_head.conv_layers.{k}.{p}", "decode_head.conv_layers.{j}.convolution.{p}"),
)
_DENSE_HEAD = (
    ("decode_head.input_conv.0.{p}", "decode_head.input_conv.convolution.{p}"),
    ("decode_head.upsample_blocks.{j}.0.{p}", "decode_head.upsample_layers.{j}.convolution.{p}"),
    ("decode_head.conv_layers.{k}.{p}", "decode_head.conv_layers.{j}.convolution.{p}"),
)
_HEADS: dict[str, tuple[tuple[str, str], ...]] = {
    "pose": (*_DECONV_HEAD, ("decode_head.conv_pose.{p}", "decode_head.predictor.{p}")),
    "seg": (*_DECONV_HEAD, ("decode_head.conv_seg.{p}", "decode_head.predictor.{p}")),
    "normal": (*_DENSE_HEAD, ("decode_head.conv_normal.{p}", "decode_head.predictor.{p}")),
    "matting": (*_DENSE_HEAD, ("decode_head.conv_matting.{p}", "decode_head.predictor.{p}")),
    "pointmap": (
        *_DENSE_HEAD,
        ("decode_head.conv_pointmap.{p}", "decode_head.predictor.{p}"),
        ("decode_head.scale_conv_layers.{k}.{p}", "scale_head.conv_layers.{j}.convolution.{p}"),
        ("decode_head.scale_final_layer.1.{p}", "scale_head.predictor.block1.layers.0.{p}"),
        ("decode_head.scale_final_layer.3.{p}", "scale_head.predictor.block2.layers.0.{p}"),
        ("decode_head.scale_final_layer.5.{p}", "scale_head.predictor.proj.{p}"),
    ),
}
# Task models keep the backbone under these prefixes.
_BACKBONE_PREFIX = {"official": "backbone.", "transformers": "model."}

_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "j": r"(?P<j>\d+)", "k": r"(?P<k>\d+)"}


@dataclass(frozen=True)
class _Rule:
    source: re.Pattern
    target: str

    def apply(self, key: str) -> str | None:
        m = self.source.fullmatch(key)
        if m is None:
            return None
        found = m.groupdict()
        if found.get("k") is not None:
            k = int(found["k"])
            if k % 3:
                return None  # a norm inside an official stage: no transformers counterpart
            found["j"] = str(k // 3)
        if found.get("j") is not None and "{k}" in self.target:
            found["k"] = str(3 * int(found["j"]))
        return self.target.format(**{n: v for n, v in found.items() if v is not None})


def _compile(pattern: str, prefix: str) -> re.Pattern:
    text = re.escape(prefix + pattern)
    for name, group in _GROUPS.items():
        text = text.replace(re.escape("{" + name + "}"), group)
    return re.compile(text)


def _rules(task: str | None, direction: str) -> list[tuple[_Rule, bool]]:
    """``(rule, is_head)`` for one direction: ``"to_transformers"`` or ``"to_official"``."""
    pre_off = _BACKBONE_PREFIX["official"] if task else ""
    pre_hf = _BACKBONE_PREFIX["transformers"] if task else ""
    pairs = [(pre_off + o, pre_hf + t, False) for o, t in _BACKBONE]
    pairs += [(o, t, True) for o, t in _HEADS.get(task, ())] if task else []
    out = []
    for official, theirs, head in pairs:
        if direction == "to_transformers":
            out.append((_Rule(_compile(official, ""), theirs), head))
        else:
            out.append((_Rule(_compile(theirs, ""), official), head))
    return out


def _check_task(task: str | None) -> None:
    if task not in TRANSFORMERS_CLASSES:
        raise CheckpointError(
            f"transformers has no Sapiens2 class for {task} models (it has "
            f"{', '.join(str(t) for t in TRANSFORMERS_CLASSES if t)} and the backbone)"
        )


def official_to_transformers(sd: StateDict, task: str | None) -> dict[str, torch.Tensor]:
    """Official keys -> transformers names (``task`` None: a backbone state dict).

    ``ffn.w12`` is split into ``gate_proj`` and ``up_proj``; ``rope_embed.periods`` is dropped.

    Raises:
        CheckpointError: a key with no transformers name (e.g. the 4K tokenizer, albedo heads).
    """
    _check_task(task)
    rules = _rules(task, "to_transformers")
    pre = _BACKBONE_PREFIX["official"] if task else ""
    w12 = _compile(pre + _W12[0], "")
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key == pre + _PERIODS:
            continue
        if m := w12.fullmatch(key):
            gate, up = value.chunk(2, dim=0)
            hf_pre = _BACKBONE_PREFIX["transformers"] if task else ""
            out[hf_pre + _W12[1][0].format(**m.groupdict())] = gate
            out[hf_pre + _W12[1][1].format(**m.groupdict())] = up
            continue
        name = next((n for r, _ in rules if (n := r.apply(key)) is not None), None)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        raise CheckpointError(
            f"no transformers name for {len(unknown)} keys: {list_names(unknown)}"
        )
    return out


def transformers_to_official(
    sd: StateDict,
    task: str | None,
    *,
    head_dim: int,
    rope_base: float = 100.0,
    rope_dtype: torch.dtype = torch.bfloat16,
) -> dict[str, torch.Tensor]:
    """Transformers names -> official keys; the inverse of :func:`official_to_transformers`.

    ``gate_proj`` and ``up_proj`` are concatenated into ``ffn.w12``; ``rope_embed.periods`` is
    recomputed from ``rope_base`` in ``rope_dtype`` (bfloat16 for the released models: every step
    in bfloat16, as the official code does).

    Raises:
        CheckpointError: a key with no official name, or half of a split ``w12``.
    """
    _check_task(task)
    rules = _rules(task, "to_official")
    hf_pre = _BACKBONE_PREFIX["transformers"] if task else ""
    pre = _BACKBONE_PREFIX["official"] if task else ""
    gate = _compile(hf_pre + _W12[1][0], "")
    up = _compile(hf_pre + _W12[1][1], "")
    out: dict[str, torch.Tensor] = {}
    halves: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in sd.items():
        for which, pattern in (("gate", gate), ("up", up)):
            if m := pattern.fullmatch(key):
                halves.setdefault((m["i"], m["p"]), {})[which] = value
                break
        else:
            name = next((n for r, _ in rules if (n := r.apply(key)) is not None), None)
            if name is None:
                unknown.append(key)
            else:
                out[name] = value
    if unknown:
        raise CheckpointError(f"no official name for {len(unknown)} keys: {list_names(unknown)}")
    for (i, p), parts in halves.items():
        if set(parts) != {"gate", "up"}:
            raise CheckpointError(f"block {i}: mlp {p} has only its {', '.join(parts)} half")
        out[pre + _W12[0].format(i=i, p=p)] = torch.cat([parts["gate"], parts["up"]], dim=0)
    device = next(iter(out.values())).device if out else None
    out[pre + _PERIODS] = rope_periods(head_dim, rope_base, rope_dtype, device=device)
    return out


def is_transformers_layout(sd: StateDict) -> bool:
    """Whether the keys are transformers names (rather than official ones)."""
    return any(k.endswith("embeddings.patch_embeddings.weight") for k in sd)


# ---------------------------------------------------------------------------- config.json
def transformers_config(model: Sapiens2 | TaskModel) -> dict:
    """The ``config.json`` of ``model`` for transformers' ``Sapiens2Config`` (with the head's
    ``head_config``), plus ``sapiens2_*`` fields our loader reads.

    Raises:
        CheckpointError: an architecture transformers cannot build (the 4K tokenizer, no class
            token, no final norm, no LayerScale, no qk norm on a model that has a ``num_kv``
            schedule transformers cannot express, albedo heads...).
    """
    task = model.task if isinstance(model, TaskModel) else None
    arch: ArchConfig = model.arch if isinstance(model, TaskModel) else model.cfg
    _check_task(task)
    unsupported = {
        "the 4K windowed tokenizer": arch.use_tokenizer,
        "no class token": not arch.with_cls_token,
        "no final norm": not arch.final_norm,
        "no LayerScale": arch.layer_scale_init is None,
        "non-'separate' RoPE coordinates": arch.rope_normalize_coords != "separate",
        "no storage tokens": arch.num_storage_tokens == 0,
    }
    problems = [what for what, bad in unsupported.items() if bad]
    if problems:
        raise CheckpointError(f"transformers cannot build {arch.name}: {', '.join(problems)}")
    cfg: dict = {
        "model_type": MODEL_TYPE,
        "architectures": [TRANSFORMERS_CLASSES[task]],
        "hidden_size": arch.embed_dim,
        "num_hidden_layers": arch.depth,
        "num_attention_heads": arch.num_heads,
        "intermediate_size": arch.ffn_dim,
        "num_key_value_heads_per_layer": [arch.kv_heads(i) for i in range(arch.depth)],
        "num_key_value_attention_heads": arch.num_kv_heads or arch.num_heads,
        "num_first_full_attention_layers": arch.full_attn_early,
        "num_last_full_attention_layers": arch.full_attn_late,
        "num_register_tokens": arch.num_storage_tokens,
        "patch_size": arch.patch_size,
        "num_channels": arch.in_channels,
        "image_size": list(arch.img_size),
        "rope_theta": arch.rope_base,
        "hidden_act": "silu",
        "use_gated_mlp": True,
        "use_qk_norm": arch.qk_norm,
        "rms_norm_eps": arch.norm_eps,
        "query_bias": arch.qkv_bias,
        "key_bias": arch.qkv_bias,
        "value_bias": arch.qkv_bias,
        "proj_bias": arch.proj_bias,
        "mlp_bias": arch.ffn_bias,
        "layerscale_value": arch.layer_scale_init,
        # transformers' default 2.0 rescales RoPE coordinates at random in train mode; the
        # official fine-tuning uses no RoPE augmentation.
        "pos_embed_rescale": None,
        "sapiens2_arch": arch.name,
        "sapiens2_rope_dtype": arch.rope_dtype,
    }
    if task is not None:
        cfg.update(_head_config(task, model.head_config, arch))
    return cfg


def _head_config(task: str, head, arch: ArchConfig) -> dict:
    if isinstance(head, PoseHeadConfig | SegHeadConfig):  # the deconv heads
        out = head.num_keypoints if isinstance(head, PoseHeadConfig) else head.num_classes
        hc = {
            "upsample_out_channels": list(head.deconv_channels),
            "upsample_kernel_sizes": list(head.deconv_kernels),
            "conv_out_channels": list(head.conv_channels),
            "conv_kernel_sizes": list(head.conv_kernels),
        }
        extra = _labels(head, out)
    else:
        assert isinstance(head, DenseHeadConfig)
        out = head.out_channels
        hc = {
            "use_pixel_shuffle": True,
            "upsample_out_channels": list(head.upsample_channels),
            "upsample_kernel_sizes": [head.upsample_kernel] * len(head.upsample_channels),
            "conv_out_channels": list(head.conv_channels),
            "conv_kernel_sizes": list(head.conv_kernels),
        }
        extra = {}
        if isinstance(head, PointmapHeadConfig):
            if len(head.scale_hidden) != 2:
                raise CheckpointError(
                    "transformers' pointmap scale MLP has two hidden layers, this head has "
                    f"{len(head.scale_hidden)}"
                )
            gh, gw = head.scale_grid
            hc.update(
                scale_conv_out_channels=list(head.scale_conv_channels),
                scale_conv_kernel_sizes=[1] * len(head.scale_conv_channels),
                scale_final_hidden_sizes=list(head.scale_hidden),
                scale_final_input_size=head.scale_conv_channels[-1] * gh * gw,
            )
            # the scale MLP fixes the input size: the token grid times the patch
            extra["image_size"] = [g * arch.patch_size for g in head.token_grid]
    return {"num_labels": out, "head_config": {"model_type": "sapiens2_head", **hc}, **extra}


def _labels(head, count: int) -> dict:
    from sapiens2.data.metadata import keypoints308, seg29

    if isinstance(head, PoseHeadConfig):
        meta = keypoints308()
        if count != meta.num_keypoints:
            return {}
        return {
            "id2label": dict(enumerate(meta.names)),
            "flip_pairs": [[int(a), int(b)] for a, b in meta.flip_pairs],
        }
    meta = seg29()
    return {"id2label": dict(enumerate(meta.names))} if count == meta.num_classes else {}


def read_transformers_config(path: str | Path) -> dict | None:
    """The Sapiens2 ``config.json`` of a folder (or beside a weights file); None when there is
    none or it is not a Sapiens2 config."""
    path = Path(path)
    cfg_path = (path if path.is_dir() else path.parent) / CONFIG_NAME
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("ignoring %s: not a readable JSON file (%s)", cfg_path, err)
        return None
    if not isinstance(cfg, dict) or cfg.get("model_type") != MODEL_TYPE:
        return None
    return cfg


def task_of_config(cfg: Mapping) -> str | None:
    """The task of a transformers config (from its ``architectures``), None for a backbone."""
    names = cfg.get("architectures") or ["Sapiens2Model"]
    known = [n for n in names if n in _TASK_OF_CLASS]
    if not known:
        raise CheckpointError(
            f"config.json architectures {names} name no Sapiens2 class this version knows "
            f"({', '.join(_TASK_OF_CLASS)})"
        )
    return _TASK_OF_CLASS[known[0]]


def adapt_transformers_checkpoint(
    path: str | Path, sd: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An official state dict (and our metadata) for weights read from ``path``.

    Unchanged unless ``path`` is in a transformers-format folder (a Sapiens2 ``config.json``
    beside it) or holds transformers names: then names are mapped back, missing RoPE periods are
    recomputed (bfloat16, from ``rope_theta``), and a pointmap's token grid is read from
    ``image_size``.
    """
    cfg = read_transformers_config(path)
    if cfg is None and not is_transformers_layout(sd):
        return sd, metadata
    if cfg is None:
        raise CheckpointError(
            f"{path}: transformers parameter names but no Sapiens2 {CONFIG_NAME} beside it (it "
            "names the task)"
        )
    task = task_of_config(cfg)
    base = float(cfg.get("rope_theta", 100.0))
    try:
        head_dim = int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise CheckpointError(
            f"{path}: config.json without hidden_size / num_attention_heads"
        ) from None
    # our config.json records a float32-RoPE model; the released models and transformers' own
    # configs mean bfloat16 periods
    rope_dtype = torch.float32 if cfg.get("sapiens2_rope_dtype") == "fp32" else torch.bfloat16
    if is_transformers_layout(sd):
        sd = transformers_to_official(
            sd, task, head_dim=head_dim, rope_base=base, rope_dtype=rope_dtype
        )
    else:
        task_file = any(k.startswith(_BACKBONE_PREFIX["official"]) for k in sd)
        periods = (_BACKBONE_PREFIX["official"] if task_file else "") + _PERIODS
        if periods not in sd:
            device = next(iter(sd.values())).device if sd else None
            sd = {**sd, periods: rope_periods(head_dim, base, rope_dtype, device=device)}
    metadata = dict(metadata)
    # a head with a fixed input size (the pointmap's scale MLP): its token grid from image_size
    if (
        task
        and head_spec(task).config_cls is PointmapHeadConfig
        and ("sapiens2_token_grid" not in metadata)
    ):
        size, patch = cfg.get("image_size"), cfg.get("patch_size", 16)
        if isinstance(size, list) and len(size) == 2:
            metadata["sapiens2_token_grid"] = f"{size[0] // patch},{size[1] // patch}"
    return sd, metadata


# ---------------------------------------------------------------------------- writing
def save_pretrained(
    model: Sapiens2 | TaskModel,
    folder: str | Path,
    *,
    key_layout: str = "transformers",
    state_dict_fn: Callable[[torch.nn.Module], dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Writes ``config.json`` + ``model.safetensors``: a folder that
    ``transformers.AutoModel.from_pretrained`` (and ``Sapiens2For<Task>``) loads, and
    :func:`sapiens2.load_model` too.

    Args:
        model: a backbone or a pose / seg / normal / pointmap model (transformers has no albedo or
            4K class).
        folder: created if needed; existing ``config.json`` / ``model.safetensors`` are replaced.
        key_layout: ``"transformers"`` (default): transformers' parameter names, as
            ``save_pretrained(save_original_format=False)`` writes them; ``AutoModel`` then
            loads the backbone of a task folder too. ``"official"``: the official names with the
            bfloat16 RoPE periods, as the hub files hold them (the official code reads the
            weights file; the ``Sapiens2For*`` classes load it, but ``AutoModel`` finds no
            backbone weights in a task folder of this layout, under ``backbone.``).

    Returns:
        The folder.
    """
    from sapiens2.checkpoints.io import write_state_dict
    from sapiens2.checkpoints.load import save_model_metadata, state_dict_for_saving

    if key_layout not in ("official", "transformers"):
        raise ValueError(f"key_layout must be 'official' or 'transformers', got {key_layout!r}")
    if not isinstance(model, Sapiens2 | TaskModel):
        raise TypeError(
            f"save_pretrained expects a Sapiens2 or TaskModel, got {type(model).__name__}"
        )
    config = transformers_config(model)  # raises for what transformers cannot build
    sd = (state_dict_fn or state_dict_for_saving)(model)
    if key_layout == "transformers":
        sd = official_to_transformers(sd, task_of_config(config))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    write_state_dict(sd, folder / WEIGHTS_NAME, metadata=save_model_metadata(model))
    return folder
