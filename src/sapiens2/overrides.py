"""``--set key=value`` overrides of frozen dataclass configs (recipes), shared by fine-tuning,
pretraining and any other typed config: dotted keys reach nested dataclass sections, values are
parsed against the field's type, and unknown keys or wrong types are errors that name the key.
:func:`require` and :func:`require_finite` give value checks (in ``__post_init__``) the same
wording."""

from __future__ import annotations

import ast
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any, get_type_hints


def apply_overrides(obj: Any, items: Mapping[str, Any] | Iterable[str]) -> Any:
    """A copy of the dataclass ``obj`` with ``{"a.b": value}`` or ``["a.b=value"]`` applied."""
    pairs = items.items() if isinstance(items, Mapping) else [split_item(s) for s in items]
    for key, value in pairs:
        obj = _set(obj, key.split("."), value, key)
    return obj


def split_item(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


def dotted_keys(obj: Any, prefix: str) -> list[str]:
    out = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        if is_dataclass(v):
            out += dotted_keys(v, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _set(obj: Any, path: list[str], value: Any, full_key: str) -> Any:
    names = {f.name for f in fields(obj)}
    head = path[0]
    if head not in names:
        raise KeyError(f"unknown recipe key {full_key!r}; known: {', '.join(dotted_keys(obj, ''))}")
    current = getattr(obj, head)
    if len(path) > 1:
        if not is_dataclass(current):
            raise KeyError(f"unknown recipe key {full_key!r}: {head!r} has no sub-keys")
        return replace(obj, **{head: _set(current, path[1:], value, full_key)})
    if is_dataclass(current):
        raise KeyError(f"recipe key {full_key!r} is a section; set one of its fields")
    hint = get_type_hints(type(obj))[head]
    return replace(obj, **{head: _coerce(full_key, value, hint)})


def _coerce(key: str, value: Any, hint: Any) -> Any:
    if not isinstance(value, str):
        return value
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if hint is str:
        return value
    if hint is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"recipe key {key}: expected a boolean, got {value!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise ValueError(f"recipe key {key}: cannot parse {value!r}") from None
    if hint is float and isinstance(parsed, int) and not isinstance(parsed, bool):
        return float(parsed)
    if hint in (int, float):
        if not isinstance(parsed, hint) or isinstance(parsed, bool):
            raise ValueError(f"recipe key {key}: expected {hint.__name__}, got {value!r}")
        return parsed
    if typing.get_origin(hint) is tuple:
        if not isinstance(parsed, tuple | list):
            raise ValueError(f"recipe key {key}: expected a tuple such as 1024,768, got {value!r}")
        elem = [a for a in args if a is not Ellipsis]
        if Ellipsis not in args and len(parsed) != len(elem):
            raise ValueError(f"recipe key {key}: expected {len(elem)} values, got {value!r}")
        conv = elem[0] if elem else float
        return tuple(conv(x) for x in parsed)
    raise ValueError(f"recipe key {key}: unsupported type {hint}")


def require(ok: bool, key: str, rule: str, value: Any) -> None:
    """Raises ``ValueError("recipe key KEY: must be RULE, got VALUE")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"recipe key {key}: must be {rule}, got {value!r}")


def require_finite(obj: Any, prefix: str = "") -> None:
    """Every float field of the dataclass ``obj`` (nested sections and tuples included) is finite
    (``--set lr=1e999`` parses as infinity)."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        key = prefix + f.name
        if is_dataclass(v):
            require_finite(v, key + ".")
        elif isinstance(v, float):
            require(math.isfinite(v), key, "a finite number", v)
        elif isinstance(v, tuple) and any(isinstance(x, float) for x in v):
            require(all(math.isfinite(x) for x in v), key, "finite numbers", v)
