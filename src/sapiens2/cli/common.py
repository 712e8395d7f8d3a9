"""Arguments that several commands share: one flag has one name, one default and one help text."""

from __future__ import annotations

import argparse

DEVICE_DEFAULT = "auto"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default ``auto``: cuda, then mps, then cpu). Commands resolve it first thing
    with :func:`sapiens2.device.resolve_device`, which names an unavailable device in one line."""
    from sapiens2.device import DEVICE_HELP

    parser.add_argument(
        "--device", default=DEVICE_DEFAULT, metavar="DEVICE", help=f"where to run: {DEVICE_HELP}"
    )
