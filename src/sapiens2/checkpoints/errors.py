"""The error raised for anything wrong with a checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the problem."""


def list_names(names, limit: int = 8) -> str:
    """``a, b, c`` for short lists; the first ``limit`` names and a count for long ones."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"
