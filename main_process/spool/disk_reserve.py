"""A few megabytes (or kilobytes) of disk kept aside, given back when the disk is full.

Owns: one reserve file next to the file it serves (``<name>.reserve``, 0600): set aside
when missing (``keep``, best effort: the disk may already be full), deleted to make room
(``release``). The spool keeps one so that it can still drain on a disk filled to the last
byte (deleting acknowledged rows needs room in its WAL), the token store one so that a
token save still fits there.

Why real blocks: ``posix_fallocate`` reserves them without writing; where it does not
exist (Windows, macOS) the bytes are written, since a sparse file would reserve nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE_MODE = 0o600


class DiskReserve:
    def __init__(self, beside: Path, size: int) -> None:
        self.path = beside.with_name(beside.name + ".reserve")
        self.size = size

    def keep(self) -> None:
        """Set the reserve aside when it is missing (best effort: the disk may be full)."""
        if self.path.exists():
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except OSError:
            return
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, self.size)
            else:  # pragma: no cover - Windows and macOS: real bytes, not a sparse file
                os.write(fd, bytes(self.size))
        except OSError:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return
        os.close(fd)

    def release(self) -> bool:
        """Give the reserve back; False when there was none to give."""
        try:
            self.path.unlink()
        except OSError:
            return False
        return True
