"""The command line is consistent: every ``--help`` renders and shows the defaults, ``--task`` and
``--device`` mean the same everywhere, and renamed flags still work under their old names."""

from __future__ import annotations

import argparse

import pytest
import torch

import sapiens2
from sapiens2.cli.common import HelpFormatter
from sapiens2.cli.main import build_parser, main
from sapiens2.models.task import a_task


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


SUBPARSERS = _subparsers()


def _shows_default(action: argparse.Action) -> bool:
    d = action.default
    return (
        bool(action.option_strings) and action.nargs != 0 and d not in (None, [], argparse.SUPPRESS)
    )


@pytest.mark.parametrize("name", sorted(SUBPARSERS))
def test_every_help_renders_and_shows_the_defaults(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: sapiens2 {name}") and "%%" not in text
    parser = SUBPARSERS[name]
    formatter = HelpFormatter(parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
        if _shows_default(action):
            assert "default" in formatter._get_help_string(action), (name, action.option_strings)
            shown = (
                " ".join(map(str, action.default))
                if isinstance(action.default, tuple | list)
                else str(action.default)
            )
            assert shown in " ".join(text.split()), (name, action.option_strings)


def test_task_and_device_are_the_same_everywhere():
    with_task = {n for n, p in SUBPARSERS.items() if "--task" in p._option_string_actions}
    assert {"predict", "eval", "check-data", "probe", "models"} <= with_task
    for name in with_task:
        assert SUBPARSERS[name]._option_string_actions["--task"].help
    with_device = {n for n, p in SUBPARSERS.items() if "--device" in p._option_string_actions}
    assert with_device == {"demo", "features", "predict", "eval", "train", "pretrain", "probe"}
    for name in with_device:
        action = SUBPARSERS[name]._option_string_actions["--device"]
        assert action.default == "auto" and "cuda, then mps, then cpu" in action.help


ALIASES = [  # (command + required arguments, old flag, new flag, destination and its value)
    (["eval", "--task", "pose", "--model", "m", "--data", "d"], ["--no-flip"], ["--no-flip-test"], "flip_test", False),
    (["features", "x.png", "--model", "m", "--out", "o"], ["--size", "64", "48"], ["--input-size", "64", "48"], "input_size", [64, 48]),
    (["probe", "--task", "seg", "--data", "d", "--model", "m"], ["--size", "64", "48"], ["--input-size", "64", "48"], "input_size", [64, 48]),
    (["curate", "--out", "o"], ["--input", "pool/"], ["--data", "pool/"], "data", "pool/"),  # --data is required
]  # fmt: skip


@pytest.mark.parametrize(("base", "old", "new", "dest", "value"), ALIASES, ids=[a[0][0] for a in ALIASES])  # fmt: skip
def test_old_flag_names_are_hidden_aliases(base, old, new, dest, value):
    parser = build_parser()
    args = parser.parse_args(base + old)
    assert args == parser.parse_args(base + new) and getattr(args, dest) == value
    help_text = SUBPARSERS[base[0]].format_help()
    assert f"{old[0]} " not in help_text and f"{new[0]} " in help_text


def test_eval_flip_test_is_on_by_default():
    base = ["eval", "--task", "pose", "--model", "m", "--data", "d"]
    assert build_parser().parse_args(base).flip_test is True


def test_eval_pointmap_normal_full_window_is_off_by_default():
    base = ["eval", "--task", "pointmap", "--model", "m", "--data", "d"]
    assert build_parser().parse_args(base).pointmap_normal_full_window is False
    args = build_parser().parse_args([*base, "--pointmap-normal-full-window"])
    assert args.pointmap_normal_full_window is True


def test_messages_use_the_right_article(tmp_path, capsys):
    assert (a_task("albedo"), a_task("seg"), a_task("pose")) == ("an albedo", "a seg", "a pose")
    torch.manual_seed(0)
    path = tmp_path / "albedo.safetensors"
    sapiens2.save_model(sapiens2.create_model("sapiens2_tiny", task="albedo"), path)
    argv = [
        "eval",
        "--task",
        "seg",
        "--model",
        str(path),
        "--data",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    assert main(argv) == 2
    assert "is an albedo model, not a seg model" in capsys.readouterr().err
