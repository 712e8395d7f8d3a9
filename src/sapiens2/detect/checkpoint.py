"""Loading and saving RTMDet weights: mmdet ``.pth`` (weights-only), hub id, converted safetensors.

An mmdet checkpoint is a dict ``{"meta": ..., "state_dict": ...}`` (what mmdet's
``tools/model_converters/publish_model.py`` keeps). It is read with
``torch.load(weights_only=True)`` only; files that need arbitrary unpickling are refused.
The architecture (widths, depths, classes) is inferred from the tensor shapes; ``exp_on_reg``
cannot be, so it is read from the checkpoint's config text when that states it, else it defaults to
True (the official detector), and it can always be given explicitly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sapiens2.checkpoints.errors import CheckpointError, state_dict_problems
from sapiens2.checkpoints.hub import hub_download, locate
from sapiens2.checkpoints.load import check_finite
from sapiens2.detect.config import DetectorTestConfig, RTMDetConfig
from sapiens2.detect.detector import RTMDetDetector
from sapiens2.detect.model import RTMDet
from sapiens2.errors import ModelSourceError

log = logging.getLogger(__name__)

#: Hub repository of the official Sapiens person detector and its file.
HUB_REPO = "facebook/sapiens-pose-bbox-detector"
HUB_FILENAME = "rtmdet_m.pth"

_FORMAT = "sapiens2.rtmdet"
_PROBE_KEY = "backbone.stem.0.conv.weight"
_MAX_LISTED = 12


class DetectorCheckpointError(CheckpointError):
    """A file or state dict that is not a loadable RTMDet checkpoint."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return shown + more


def _shape(sd: Mapping[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in sd:
        raise DetectorCheckpointError(f"{where}: missing key {key!r}")
    return tuple(sd[key].shape)


def _count_indices(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def config_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    *,
    exp_on_reg: bool = True,
    bn_eps: float = 1e-5,
    where: str = "state dict",
) -> RTMDetConfig:
    """Infer the RTMDet architecture from mmdet-named tensor shapes.

    Args:
        sd: mmdet-format state dict.
        exp_on_reg: not inferable from shapes; the official detector uses True.
        bn_eps: not inferable; the official config uses 1e-5.
        where: name used in error messages (file name).

    Returns:
        The config; strict key/shape checking happens when loading.

    Raises:
        DetectorCheckpointError: the state dict is not an RTMDet one (named key missing).
    """
    if _PROBE_KEY not in sd:
        sample = _listing(sorted(sd)[:5]) if sd else "no keys"
        raise DetectorCheckpointError(
            f"{where}: not an RTMDet detector checkpoint (no {_PROBE_KEY!r}; keys start with "
            f"{sample})"
        )

    def shape(key: str) -> tuple[int, ...]:
        return _shape(sd, key, where)

    csp_index = {1: 1, 2: 1, 3: 1, 4: 2}
    stage_channels = tuple(shape(f"backbone.stage{i}.0.conv.weight")[0] for i in range(1, 5))
    cls_w = shape("bbox_head.rtm_cls.0.weight")
    try:
        return RTMDetConfig(
            stem_channels=(
                shape("backbone.stem.0.conv.weight")[0],
                shape("backbone.stem.2.conv.weight")[0],
            ),
            stage_channels=stage_channels,  # type: ignore[arg-type]
            stage_blocks=tuple(  # type: ignore[arg-type]
                _count_indices(sd, f"backbone.stage{i}.{csp_index[i]}.blocks.") for i in range(1, 5)
            ),
            expand_ratio=shape("backbone.stage1.1.main_conv.conv.weight")[0] / stage_channels[0],
            channel_attention="backbone.stage1.1.attention.fc.weight" in sd,
            neck_channels=shape("neck.out_convs.0.conv.weight")[0],
            neck_blocks=_count_indices(sd, "neck.top_down_blocks.0.blocks."),
            head_channels=shape("bbox_head.cls_convs.0.0.conv.weight")[0],
            head_stacked_convs=_count_indices(sd, "bbox_head.cls_convs.0."),
            num_classes=cls_w[0],
            pred_kernel_size=cls_w[-1],
            exp_on_reg=exp_on_reg,
            bn_eps=bn_eps,
        )
    except DetectorCheckpointError:
        raise
    except ValueError as err:  # RTMDetConfig's own checks (e.g. a stage without blocks)
        raise DetectorCheckpointError(f"{where}: unsupported RTMDet layout: {err}") from err


def check_state_dict(model: RTMDet, sd: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise :class:`DetectorCheckpointError` naming every missing, unexpected or mis-shaped key,
    non-tensor value, or shared head conv whose per-level copies differ."""
    problems = state_dict_problems(model.state_dict(), sd, limit=_MAX_LISTED)
    if problems:
        raise DetectorCheckpointError(
            f"{where}: does not fit the inferred RTMDet; " + "; ".join(problems)
        )
    differing = [
        f"{alias} != {base}"
        for alias, base in model.shared_head_keys().items()
        if not torch.equal(sd[alias].float(), sd[base].float())
    ]
    if differing:
        raise DetectorCheckpointError(
            f"{where}: head convs are shared across levels but these copies differ: "
            f"{_listing(differing)}"
        )


def build_detector_model(
    sd: Mapping[str, torch.Tensor],
    *,
    exp_on_reg: bool = True,
    bn_eps: float = 1e-5,
    where: str = "state dict",
) -> RTMDet:
    """Infer the architecture from ``sd``, check it strictly and load it (float32, eval mode)."""
    cfg = config_from_state_dict(sd, exp_on_reg=exp_on_reg, bn_eps=bn_eps, where=where)
    model = RTMDet(cfg)
    check_state_dict(model, sd, where)
    model.load_state_dict(dict(sd), strict=True)
    return model.float().eval()


def _exp_on_reg_from_cfg_text(cfg_text: Any) -> bool | None:
    if not isinstance(cfg_text, str):
        return None
    values = set(re.findall(r"\bexp_on_reg\s*=\s*(True|False)\b", cfg_text))
    return values.pop() == "True" if len(values) == 1 else None


def _read_pth(path: Path) -> tuple[Mapping[str, torch.Tensor], dict[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError...
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise DetectorCheckpointError(
                f"{path}: torch.load(weights_only=True) refuses it: it pickles "
                f"{refused.group(1)}, which is not a plain type (a training checkpoint?). Only "
                "tensors, dicts, lists, strings and numbers are accepted. If you trust the file, "
                "convert it once: sd = torch.load(path, weights_only=False)['state_dict']; "
                "sapiens2.detect.save_detector(sapiens2.detect.load_detector(sd), "
                "'detector.safetensors')."
            ) from err
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        raise DetectorCheckpointError(
            f"{path}: not a readable PyTorch checkpoint (torch.load(weights_only=True) failed "
            f"with {reason})"
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj:
        sd, meta = obj["state_dict"], obj.get("meta") or {}
    elif (
        isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        sd, meta = obj, {}
    else:
        top = _listing([str(k) for k in obj]) if isinstance(obj, Mapping) else type(obj).__name__
        raise DetectorCheckpointError(
            f"{path}: not a detector checkpoint (expected a dict with 'state_dict' or a state "
            f"dict of tensors; found {top})"
        )
    if not isinstance(sd, Mapping):
        raise DetectorCheckpointError(f"{path}: 'state_dict' is a {type(sd).__name__}, not a dict")
    not_str = [k for k in sd if not isinstance(k, str)]
    if not_str:
        raise DetectorCheckpointError(
            f"{path}: state dict keys must be strings, found {not_str[:4]!r}"
        )
    info: dict[str, Any] = {}
    if isinstance(meta, Mapping):
        exp = _exp_on_reg_from_cfg_text(meta.get("cfg"))
        if exp is not None:
            info["exp_on_reg"] = exp
        dataset_meta = meta.get("dataset_meta") or {}
        classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None
        if classes is None:
            classes = meta.get("CLASSES")
        if isinstance(classes, list | tuple) and classes:
            info["classes"] = tuple(str(c) for c in classes)
    return sd, info


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as err:
        raise DetectorCheckpointError(f"{path}: cannot be read as safetensors ({err})") from err
    info: dict[str, Any] = {}
    if metadata.get("format") == _FORMAT:
        info = _parse_metadata(metadata, str(path))
    return sd, info


#: Bounds on what a detector file's metadata may ask for (a 64000-pixel input means a 9 GB
#: resize per image; a NaN epsilon silently yields no boxes).
MAX_INPUT_SIZE = 4096
MAX_DETECTIONS = 100_000


def _parse_metadata(metadata: Mapping[str, str], where: str) -> dict[str, Any]:
    """The settings stored by :func:`save_detector`, each checked (type, range, finite)."""

    def fail(what: str) -> DetectorCheckpointError:
        return DetectorCheckpointError(f"{where}: metadata {what}")

    for key in ("exp_on_reg", "bn_eps", "classes"):
        if key not in metadata:
            raise fail(f"lacks {key!r} (a {_FORMAT} file records exp_on_reg, bn_eps, classes)")
    info: dict[str, Any] = {}
    if metadata["exp_on_reg"] not in ("true", "false"):
        raise fail(f"exp_on_reg must be 'true' or 'false', got {metadata['exp_on_reg'][:20]!r}")
    info["exp_on_reg"] = metadata["exp_on_reg"] == "true"
    try:
        eps = float(metadata["bn_eps"])
    except ValueError:
        eps = math.nan
    if not (math.isfinite(eps) and 0 < eps < 1):
        raise fail(f"bn_eps must be a finite number in (0, 1), got {metadata['bn_eps'][:20]!r}")
    info["bn_eps"] = eps
    classes = _json(metadata["classes"], "classes", fail)
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise fail("classes must be a non-empty JSON list of strings")
    info["classes"] = tuple(classes)
    if "test_config" in metadata:
        info["test_config"] = _test_config(
            _json(metadata["test_config"], "test_config", fail), fail
        )
    return info


def _json(text: str, key: str, fail) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise fail(f"{key} is not valid JSON") from None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _test_config(tc: Any, fail) -> DetectorTestConfig:
    fields = {f.name for f in dataclasses.fields(DetectorTestConfig)}
    if not isinstance(tc, dict):
        raise fail("test_config must be a JSON object")
    unknown = sorted(set(tc) - fields)
    if unknown:
        raise fail(f"test_config has unknown keys {unknown[:5]} (known: {sorted(fields)})")
    ints = {"input_size": (32, MAX_INPUT_SIZE), "pad_value": (0, 255)}
    ints |= {"nms_pre": (1, MAX_DETECTIONS), "max_per_img": (1, MAX_DETECTIONS)}
    for key, (lo, hi) in ints.items():
        if key in tc and not (
            isinstance(tc[key], int) and not isinstance(tc[key], bool) and lo <= tc[key] <= hi
        ):
            raise fail(f"test_config.{key} must be an integer in [{lo}, {hi}], got {tc[key]!r:.40}")
    if "score_thr" in tc and not (_number(tc["score_thr"]) and 0 <= tc["score_thr"] <= 1):
        raise fail(f"test_config.score_thr must be a number in [0, 1], got {tc['score_thr']!r:.40}")
    if "min_bbox_size" in tc and not (_number(tc["min_bbox_size"]) and tc["min_bbox_size"] >= 0):
        raise fail(
            f"test_config.min_bbox_size must be a number >= 0, got {tc['min_bbox_size']!r:.40}"
        )
    for key in ("mean_bgr", "std_bgr"):
        v = tc.get(key, [1.0, 1.0, 1.0])
        if not (isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v)):
            raise fail(f"test_config.{key} must be three finite numbers, got {v!r:.60}")
        if key == "std_bgr" and min(v) <= 0:
            raise fail(f"test_config.std_bgr must be positive, got {v}")
    try:
        return DetectorTestConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in tc.items()}
        )
    except ValueError as err:
        raise fail(f"test_config: {err}") from None


def _resolve(source: str | os.PathLike[str]) -> Path:
    """A local detector file: an existing path, or a hub file (``org/name`` with the default
    file, ``hf://org/name[/file]``); a missing path is an error, never a download."""
    found = locate(source, what="detector weights")
    if isinstance(found, Path):
        if not found.is_file():
            raise ModelSourceError(f"detector weights {found}: not a regular file")
        return found
    repo_id, filename = found
    # Honours HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE / HF_TOKEN like any hub download.
    return hub_download(repo_id, filename or HUB_FILENAME)


def cached_detector_path(repo_id: str = HUB_REPO, filename: str = HUB_FILENAME) -> Path | None:
    """The local path of the hub detector weights if they are already in the Hugging Face cache
    (``HF_HUB_CACHE``), else None. Never touches the network.

    Lets a caller pick the RTMDet detector by default only when its weights are available.
    """
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return Path(found) if isinstance(found, str) else None


def load_detector(
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor] = HUB_REPO,
    *,
    device: torch.device | str | None = None,
    exp_on_reg: bool | None = None,
    test_config: DetectorTestConfig | None = None,
    allow_nonfinite: bool = False,
) -> RTMDetDetector:
    """Load an RTMDet person detector ready to call on RGB images.

    Args:
        source: a ``.pth`` mmdet checkpoint, a ``.safetensors`` file written by
            :func:`save_detector` (or any mmdet-named safetensors), a hub id ``org/name``
            (file ``rtmdet_m.pth``) or ``hf://org/name/<file>``, or an mmdet-named state dict.
            A path that does not exist is an error, never a hub download.
            Default: the official ``facebook/sapiens-pose-bbox-detector``.
        device: where to run (default CPU).
        exp_on_reg: override the regression-exp setting (default: from the file, else True).
        test_config: override the pre/post-processing (default: from the file, else official).
        allow_nonfinite: load weights holding NaN or infinite values with a warning instead of
            refusing them.

    Returns:
        An :class:`RTMDetDetector`.

    Raises:
        ModelSourceError (a FileNotFoundError): no such file (a missing path is never taken
            for a hub id), or the hub file cannot be had.
        DetectorCheckpointError (a CheckpointError, a ValueError): unreadable, not RTMDet,
            keys/shapes that do not fit (each offending key named), metadata out of range, or
            NaN/infinite weights.
    """
    if isinstance(source, Mapping):
        sd, info, where = source, {}, "state dict"
    else:
        path = _resolve(source)
        where = str(path)
        if path.suffix == ".safetensors":
            sd, info = _read_safetensors(path)
        else:
            sd, info = _read_pth(path)
    exp = exp_on_reg if exp_on_reg is not None else info.get("exp_on_reg")
    if exp is None:
        log.info("%s: exp_on_reg not recorded; using True (the official detector)", where)
        exp = True
    model = build_detector_model(sd, exp_on_reg=exp, bn_eps=info.get("bn_eps", 1e-5), where=where)
    try:
        check_finite(sd, where, allow_nonfinite=allow_nonfinite)
    except CheckpointError as err:
        raise DetectorCheckpointError(str(err)) from None
    log.info("loaded RTMDet from %s: %s", where, model.config)
    return RTMDetDetector(
        model,
        test_config or info.get("test_config"),
        classes=info.get("classes", ("person",)),
        device=device,
    )


def save_detector(detector: RTMDetDetector, path: str | os.PathLike[str]) -> None:
    """Write a detector as safetensors: mmdet key names (shared head convs stored once per level,
    as in mmdet files), float32, plus metadata (``exp_on_reg``, ``bn_eps``, classes, test config).

    Args:
        detector: the detector to save.
        path: destination ``.safetensors`` file.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_detector writes .safetensors files, got {path.name!r}")
    cfg = detector.model.config
    tensors = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in detector.model.state_dict().items()
    }
    metadata = {
        "format": _FORMAT,
        "exp_on_reg": "true" if cfg.exp_on_reg else "false",
        "bn_eps": repr(cfg.bn_eps),
        "classes": json.dumps(list(detector.classes)),
        "test_config": json.dumps(asdict(detector.test_config)),
    }
    save_file(tensors, str(path), metadata=metadata)
