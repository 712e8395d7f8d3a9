"""What the commands share: one flag has one name, one default and one help text everywhere, and
``--help`` shows the defaults.

Renamed flags keep their old name as a hidden alias (not in ``--help``, same destination), so
that scripts written with the earlier names still run.
"""

from __future__ import annotations

import argparse

from sapiens2.tasks import task_names

__all__ = ["HelpFormatter", "add_device_argument", "add_hidden_alias", "add_task_argument"]

DEVICE_DEFAULT = "auto"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written, and ``(default: X)`` after every option that has a default worth showing
    (not None, False or an empty list, and not already mentioned in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
            or action.nargs == 0  # flags: their default is implied by the name
        ):
            return text
        if isinstance(default, tuple | list):
            return f"{text} (default: {' '.join(str(v) for v in default)})"
        return text + " (default: %(default)s)"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default ``auto``: cuda, then mps, then cpu). Commands resolve it first thing
    with :func:`sapiens2.device.resolve_device`, which names an unavailable device in one line."""
    from sapiens2.device import DEVICE_HELP

    parser.add_argument(
        "--device", default=DEVICE_DEFAULT, metavar="DEVICE", help=f"where to run: {DEVICE_HELP}"
    )


def add_task_argument(
    parser: argparse.ArgumentParser,
    choices: tuple[str, ...] | None = None,
    help: str = "the model's task",
) -> None:
    """``--task`` (required), one of ``choices`` (default: the registered tasks)."""
    parser.add_argument("--task", required=True, choices=choices or task_names(), help=help)


def add_hidden_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Make ``old`` a hidden alias of the already added option ``new``: the same argparse action
    (destination, arguments, ``required``) under a second name that ``--help`` does not list."""
    actions = parser._option_string_actions  # where argparse looks options up by name
    if old in actions:
        raise ValueError(f"{old} is already an option of {parser.prog}")
    actions[old] = actions[new]
