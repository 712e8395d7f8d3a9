"""The task list is written once, in ``sapiens2/tasks/``: no other module spells a list of tasks
(a tuple, list, set or dict literal holding three or more task names) or branches on a task name
(``task == "pose"``, ``self.task in ("seg", ...)``).

The few files below may, for the reason given, and only as many times as counted: a new list in
them fails too.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import sapiens2
from sapiens2.tasks import task_names

SRC = Path(sapiens2.__file__).parent

ALLOWED: dict[str, tuple[int, str]] = {
    "data/formats.py": (5, "the folder/shard format: label files per task and per label field"),
    "data/shards.py": (1, "label field names (seg, normal, ... are also field names)"),
    "data/transforms.py": (3, "label field names and their padding values"),
    "data/synth/preview.py": (2, "columns of the synthetic-data preview (label fields)"),
    "checkpoints/transformers.py": (2, "transformers' class and key names of each task it has"),
    "pretrain/probe.py": (1, "linear probes exist for seg and pose only"),
    "demo.py": (1, "the demo's panels (being reworked separately; see docs/architecture.md)"),
}


def _strings(nodes) -> set[str]:
    return {n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _is_task(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    return name == "task"


def task_lists(source: str, tasks: set[str]) -> list[int]:
    """Line numbers of task lists and task-name comparisons in ``source``."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            if len(tasks & _strings(node.elts)) >= 3:
                hits.append(node.lineno)
        elif isinstance(node, ast.Dict):
            if len(tasks & _strings(node.keys)) >= 3:
                hits.append(node.lineno)
        elif isinstance(node, ast.Compare) and _is_task(node.left):
            for c in node.comparators:
                if tasks & _strings([c, *getattr(c, "elts", [])]):
                    hits.append(node.lineno)
    return hits


def test_the_detector_finds_lists_and_branches():
    tasks = set(task_names())
    code = 'A = ("pose", "seg", "normal")\nif task == "seg": pass\nif self.task in ("x", "pose"): pass\n'
    assert task_lists(code, tasks) == [1, 2, 3]
    assert task_lists('B = ("seg", "other")\nif mode == "seg": pass\n', tasks) == []


def test_no_task_list_outside_the_registry():
    tasks = set(task_names())
    found: Counter[str] = Counter()
    where: dict[str, list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("tasks/"):
            continue
        hits = task_lists(path.read_text(encoding="utf-8"), tasks)
        if hits:
            found[rel] = len(hits)
            where[rel] = hits
    extra = {
        rel: where[rel] for rel, n in found.items() if rel not in ALLOWED or n > ALLOWED[rel][0]
    }
    assert not extra, f"task lists outside sapiens2/tasks (file: lines): {extra}"


def test_docs_name_every_task():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### Tasks") :]
    architecture = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    for task in task_names():
        assert f"\n| {task} |" in table, task
        assert task in architecture, task
