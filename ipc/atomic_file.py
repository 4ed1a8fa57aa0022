"""Replacing a file whole, so that a crash at any instant leaves the old file or the new one.

Owns ``write_file_atomically``, the one way every package writes a file it replaces (the
token file and the client id, the keychain's marker, ``endpoints.json``, the autostart
entries, the server's ready file): a temporary file in the same directory (a rename
across file systems is not atomic), created with its final mode from its first instant
(``O_EXCL``, so a secret is never readable by others, not even briefly, and a stale
temporary is never reused), written, fsynced, renamed over the old file, and the
directory fsynced so the rename itself survives a power cut. A write that fails removes
its temporary file and leaves the old file as it was.

Why here: ``ipc`` is the lowest layer every process imports (the main process, the
renderer host and the reference server may all import it), and ``ipc/__init__`` loads
nothing, so importing this module pulls in no ZeroMQ.

Must not: import anything of the other packages, or decide names or modes (callers do).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

PRIVATE_FILE_MODE = 0o600


def write_file_atomically(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content only.

    The file gets exactly ``mode`` (the umask does not narrow it). Raises ``OSError``;
    then ``path`` is as it was and no temporary file is left.
    """
    directory = path.parent
    temporary = directory / f".{path.name}.{uuid.uuid4().hex}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, mode)
    try:
        try:
            # The umask may have removed bits from ``mode``; set it exactly.
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows has no directory fsync)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
