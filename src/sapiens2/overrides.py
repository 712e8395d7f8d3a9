"""The one typed-config parser: ``--set key=value`` overrides of frozen dataclass configs
(recipes), shared by fine-tuning, pretraining and any other typed config, and :func:`from_dict` for
config files (the curation config): dotted keys reach nested dataclass sections, values are
checked against the field's real type hint (:func:`check_value`), and unknown keys or wrong types
are errors that name the key.
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
    """A ``--set`` value: strings are parsed for the field's type, then checked like any value."""
    where = f"recipe key {key}"
    if isinstance(value, str):
        value = _parse_text(where, value, hint)
    return check_value(value, hint, where)


def _optional(hint: Any) -> tuple[bool, list[Any]]:
    """``(allows None, the other members)`` of a union hint (``(False, [hint])`` otherwise)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return type(None) in args, [a for a in args if a is not type(None)]
    return False, [hint]


def _parse_text(where: str, value: str, hint: Any) -> Any:
    """The Python value a command-line string stands for, given the field's type."""
    nullable, members = _optional(hint)
    if nullable and value.lower() in ("none", "null"):
        return None
    hint = members[0]
    if hint is str or typing.get_origin(hint) is typing.Literal:
        return value
    if hint is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise ValueError(f"{where}: cannot parse {value!r}") from None


def check_value(value: Any, hint: Any, where: str) -> Any:
    """The one typed-value check of the configs (``--set`` overrides and config files): ``value``
    against the type hint ``hint``, returned normalised (ints as floats for a float field, lists
    as tuples); errors name ``where``.

    Raises:
        ValueError: a value of another type, a tuple of the wrong length, a null where the type
            does not allow None, a value outside a Literal.
    """
    nullable, members = _optional(hint)
    if value is None:
        if not nullable:
            raise ValueError(f"{where}: null is not allowed here")
        return None
    hint = members[0]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected a boolean, got {value!r}")
        return value
    if hint in (int, float):
        ok = isinstance(value, int | float) if hint is float else isinstance(value, int)
        if not ok or isinstance(value, bool):
            raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
        return float(value) if hint is float else value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected str, got {value!r}")
        return value
    if origin is tuple:
        elem = [a for a in args if a is not Ellipsis]
        if not isinstance(value, tuple | list):
            raise ValueError(f"{where}: expected a tuple such as 1024,768, got {value!r}")
        if Ellipsis not in args and len(value) != len(elem):
            raise ValueError(f"{where}: expected {len(elem)} values, got {value!r}")
        return tuple(
            check_value(v, elem[0] if Ellipsis in args else elem[i], where)
            for i, v in enumerate(value)
        )
    raise ValueError(f"{where}: unsupported type {hint}")


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """A (nested) dataclass ``cls`` from a dict of plain values, as a JSON or TOML config file
    gives: every key must be a field and every value of its type (:func:`check_value`); nested
    dataclass fields take nested dicts. Errors start with ``config <dotted key>:``."""
    label = f"config {where or 'file'}"
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected a table/object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{label}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if is_dataclass(hints[key]):
            kwargs[key] = from_dict(hints[key], value, path)
        else:
            kwargs[key] = check_value(value, hints[key], f"config {path}")
    return cls(**kwargs)


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
