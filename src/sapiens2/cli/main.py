"""Entry point of the ``sapiens2`` console script.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from sapiens2.errors import Sapiens2Error


def _command_modules() -> list[ModuleType]:
    # Imported here so `sapiens2 --help` stays fast and one broken command cannot hide the others.
    from sapiens2.cli import (
        check_data,
        convert,
        curate,
        demo,
        eval,
        export,
        features,
        models,
        predict,
        pretrain,
        probe,
        recipes,
        synth,
        train,
    )

    return [
        demo,
        models,
        features,
        predict,
        eval,
        synth,
        check_data,
        recipes,
        train,
        pretrain,
        probe,
        curate,
        export,
        convert,
    ]


def version_line() -> str:
    """``sapiens2 <version> (torch <version>)``: what ``sapiens2 --version`` prints."""
    import torch

    from sapiens2 import __version__

    return f"sapiens2 {__version__} (torch {torch.__version__})"


def build_parser() -> argparse.ArgumentParser:
    from sapiens2.cli.common import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="sapiens2",
        description="Sapiens2 human-centric vision models: predict, evaluate, train.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME, help=mod.HELP, description=mod.HELP, formatter_class=HelpFormatter
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


# What the user can fix, printed as one line: the project's own errors, the environment's
# (missing files, permissions, a full disk), and the ValueError / KeyError the commands raise about
# their arguments. Anything else is a bug and keeps its traceback; -v shows every traceback.
USER_ERRORS = (Sapiens2Error, OSError, ValueError, KeyError)


def error_line(err: BaseException) -> str:
    """The one-line message of a user error (a KeyError's message without its quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    return " ".join(str(text).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as err:
        if args.verbose:
            raise
        print(f"sapiens2 {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
