"""The error raised for anything wrong with a checkpoint, and the strict key comparison."""

from collections.abc import Mapping

import torch

from sapiens2.errors import Sapiens2Error


class CheckpointError(Sapiens2Error, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the problem."""


def list_names(names, limit: int = 8) -> str:
    """``a, b, c`` for short lists; the first ``limit`` names and a count for long ones."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def state_dict_problems(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, object], limit: int = 8
) -> list[str]:
    """What keeps ``given`` from loading strictly into a model with state dict ``expected``:
    missing and unexpected keys, non-tensor values, shape mismatches (empty when it fits)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    not_tensor = [k for k in given if k in expected and not isinstance(given[k], torch.Tensor)]
    bad_shape = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and isinstance(given[k], torch.Tensor) and given[k].shape != expected[k].shape
    ]
    named = (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("non-tensor values", not_tensor),
        ("shape mismatches", bad_shape),
    )
    return [f"{what}: {list_names(keys, limit)}" for what, keys in named if keys]
