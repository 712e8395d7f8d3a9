"""The task registry: one module per task, each declaring a typed :class:`TaskSpec`.

Everything that differs between tasks (head widths and checkpoint key, pre/post-processing,
result type and written files, metric adapter, loss, dataset, recipe defaults) is in the task's
module; the rest of the package iterates :func:`all_tasks` or looks a name up with
:func:`get_task`. Importing this package registers each task's head, runner and outputs with the
lower layers (``import sapiens2`` does it), which look them up by name and never import it.

Adding a task: write ``sapiens2/tasks/<task>.py`` with its ``SPEC`` and list it in ``_MODULES``.
"""

from __future__ import annotations

from importlib import import_module

from sapiens2.tasks.base import RecipeDefaults, SizeHyper, TaskAdapter, TaskSpec

__all__ = [
    "RecipeDefaults",
    "SizeHyper",
    "TaskAdapter",
    "TaskSpec",
    "all_tasks",
    "create_loss",
    "get_task",
    "task_names",
]

# the order of --help choices, tables and docs
_MODULES = ("pose", "seg", "normal", "pointmap", "albedo", "matting")

_REGISTRY: dict[str, TaskSpec] = {}


def _register(spec: TaskSpec) -> None:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"task {spec.name!r} is already registered")
    spec.register()
    _REGISTRY[spec.name] = spec


for _module in _MODULES:
    _register(import_module(f"sapiens2.tasks.{_module}").SPEC)


def task_names() -> tuple[str, ...]:
    """The registered task names, in registry order."""
    return tuple(_REGISTRY)


def all_tasks() -> tuple[TaskSpec, ...]:
    return tuple(_REGISTRY.values())


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``name``; the error names the known tasks."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(_REGISTRY)}") from None


def create_loss(task: str, weights=None):
    """The composite loss of ``task`` with ``weights`` (that task's ``<Task>LossWeights``; None
    for the official weights)."""
    return get_task(task).loss(weights)
