"""The project's error types: what a user can fix, said in one line.

Everything sapiens2 raises on purpose about bad input derives from :class:`Sapiens2Error`; the
``sapiens2`` command prints those as one line and exits non-zero, while any other exception (a bug)
keeps its traceback. The subclasses also derive from the built-in type that callers caught before
they existed (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.

- :class:`DataError`: a file read from disk (image, label, annotation JSON, shard, index, boxes)
  is broken or not what it claims; :class:`ImageTooLargeError` and :class:`BoxesError` are kinds
  of it.
- :class:`sapiens2.checkpoints.CheckpointError`: weights that cannot be read or do not fit
  (:class:`sapiens2.detect.DetectorCheckpointError` for the person detector).
- :class:`ModelSourceError`: a model name that is neither an existing file or folder, a bundled
  demo model nor a reachable hub id.
- :class:`OutputError`: an output folder that cannot be used (not a folder, not writable, holding
  the inputs, or in use by another run).
- :class:`UsageError`: arguments that contradict each other or are out of range.
"""

from __future__ import annotations


class Sapiens2Error(Exception):
    """Base of the errors sapiens2 raises about its inputs; the message names the problem."""


class UsageError(Sapiens2Error, ValueError):
    """An argument that is out of range or contradicts another one."""


class DataError(Sapiens2Error, ValueError):
    """Bad or missing data; the message names the file and the problem."""


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than the configured limit (never decoded)."""


class BoxesError(DataError):
    """Person boxes that are not finite, positive-size ``x1, y1, x2, y2`` rows, or too many."""


class ModelSourceError(Sapiens2Error, FileNotFoundError):
    """A model source that is not a file, folder, demo model or reachable hub id."""


class OutputError(Sapiens2Error):
    """An output folder that cannot be used, would overwrite inputs, or is in use by another run."""


__all__ = [
    "BoxesError",
    "DataError",
    "ImageTooLargeError",
    "ModelSourceError",
    "OutputError",
    "Sapiens2Error",
    "UsageError",
]
