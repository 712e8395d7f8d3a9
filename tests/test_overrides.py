"""One typed-config parser: ``--set`` strings and config-file values go through the same type
check (``check_value``), and both name the key in their errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sapiens2.overrides import apply_overrides, from_dict


@dataclass(frozen=True)
class Inner:
    size: tuple[int, int] = (4, 3)
    scale: float | None = 1.0


@dataclass(frozen=True)
class Outer:
    name: str = "a"
    steps: int = 1
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_set_strings_and_file_values_give_the_same_config():
    a = apply_overrides(Outer(), ["steps=5", "flag=yes", "inner.size=8,6", "inner.scale=none"])
    b = from_dict(Outer, {"steps": 5, "flag": True, "inner": {"size": [8, 6], "scale": None}})
    assert a == b == Outer("a", 5, True, Inner((8, 6), None))
    assert from_dict(Inner, {"scale": 2}).scale == 2.0 and isinstance(
        apply_overrides(Inner(), {"scale": 2}).scale, float
    )


@pytest.mark.parametrize(
    ("override", "data", "msg"),
    [
        ("steps=1.5", {"steps": 1.5}, "steps: expected int, got 1.5"),
        ("inner.size=1,2,3", {"inner": {"size": [1, 2, 3]}}, "inner.size: expected 2 values"),
        ("flag=2", {"flag": 2}, "flag: expected a boolean"),
    ],
)
def test_both_name_the_key(override, data, msg):
    with pytest.raises(ValueError, match=f"recipe key {msg}"):
        apply_overrides(Outer(), [override])
    with pytest.raises(ValueError, match=f"config {msg}"):
        from_dict(Outer, data)
    with pytest.raises(ValueError, match="config steps: null is not allowed"):
        from_dict(Outer, {"steps": None})
