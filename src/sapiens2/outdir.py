"""Output folders: checked before a run writes anything, never holding its inputs, one run at a time.

:func:`prepare_out_dir` creates the folder and refuses one that is a file, sits under a file, is
not writable, or holds an input file (outputs could overwrite inputs, and a second run would read
the first one's outputs as inputs). :class:`OutputLock` makes a second run into the same folder
fail at once instead of both exiting 0 with one run's files overwritten by the other's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

from sapiens2.errors import OutputError

LOCK_NAME = ".sapiens2.lock"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def prepare_out_dir(
    out: str | Path,
    inputs: Iterable[str | Path] = (),
    *,
    input_dirs: Iterable[str | Path] = (),
    flag: str = "--out",
) -> Path:
    """Create the output folder ``out`` (and its parents) after checking it can be used.

    Args:
        out: the output folder.
        inputs: files the run reads; none may lie inside ``out``.
        input_dirs: folders the run reads recursively: ``out`` may neither hold one nor lie
            inside one.
        flag: how the folder is named in messages.

    Returns:
        ``out`` as a Path.

    Raises:
        OutputError: a file (or a path under one), not writable, or overlapping the inputs.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out} is a file, not a folder")
    real = out.resolve()
    forms = {real, Path(os.path.abspath(out))}
    # inputs may be millions of listed files: compared by absolute path, without a syscall each
    files = ((src, Path(os.path.abspath(src))) for src in inputs)
    folders = ((src, Path(src).resolve()) for src in input_dirs)
    for src, where in (*files, *folders):
        if any(_inside(where, form) for form in forms):
            raise OutputError(
                f"{flag} {out} holds the input {src}: outputs could overwrite or delete inputs, "
                "and a later run would read them as inputs; choose an output folder outside the "
                "inputs"
            )
    for src in input_dirs:
        if _inside(real, Path(src).resolve()):
            raise OutputError(
                f"{flag} {out} is inside the input folder {src}: a later run would read the "
                "outputs as inputs; choose an output folder outside the inputs"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{flag} {out}: a part of this path is a file, not a folder") from None
    except PermissionError:
        raise OutputError(f"{flag} {out}: permission denied to create this folder") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out}: this folder is not writable")
    return out


class OutputLock:
    """An exclusive lock on an output folder for the length of a run (``with OutputLock(out):``).

    The lock is ``<out>/.sapiens2.lock``, held with ``flock`` (released by the system if the
    process dies) where the platform has it, else created exclusively (a crashed run leaves it
    behind; the message says to delete it). It is removed when the run ends.

    Raises:
        OutputError: another run holds the lock.
    """

    def __init__(self, out: str | Path, what: str = "sapiens2") -> None:
        self.path = Path(out) / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def _held_by(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return f" ({text})" if text else ""

    def acquire(self) -> None:
        info = f"pid {os.getpid()} on {socket.gethostname()}: {self.what}\n".encode()
        try:
            import fcntl
        except ImportError:  # no flock: an exclusively created file
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise OutputError(
                    f"{self.path.parent} is in use by another run{self._held_by()}; wait for it, "
                    f"or choose another output folder (delete {self.path} if no run is active)"
                ) from None
            os.write(fd, info)
            self._fd = fd
            return
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise OutputError(
                    f"{self.path.parent} is in use by another run{self._held_by()}; wait for "
                    "it, or choose another output folder"
                ) from None
            # the holder before us may have removed the file between our open and our lock
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, info)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def command_line() -> str:
    """The running command, for the lock file."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]


__all__ = ["LOCK_NAME", "OutputLock", "command_line", "prepare_out_dir"]
