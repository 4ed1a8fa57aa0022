"""Directory change events from Linux's inotify, read on the event loop the moment they come.

Owns: one inotify descriptor watching a set of directories (not recursively), read by the
event loop (``add_reader``) as soon as the kernel has events for it, and turned into the
``(watchfiles.Change, path)`` pairs that ``directory_watch`` also takes from ``watchfiles``.

Why not ``watchfiles`` on Linux: its watcher thread looks for events every ``step`` ms and
hands a batch over only once a look finds nothing new, so an append reaches the loop one
to two steps late (10 to 20 ms at our 10 ms step, most of a line's latency once chunks leave
at once), and the thread takes the GIL every step even when nothing happens (100 times a
second while idle). An inotify descriptor wakes the loop only when there is something to
read. Elsewhere (macOS, Windows) and with ``poll`` (file systems that send no events),
``directory_watch`` keeps ``watchfiles``.

Must not: decide what a change means (``SourceSet`` does), or block: the descriptor is
non-blocking and each wake-up reads what is there.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections.abc import Callable, Iterable

import watchfiles

_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ONLYDIR = 0x01000000
_IN_EXCL_UNLINK = 0x04000000

_WATCH_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
    | _IN_EXCL_UNLINK
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_READ_SIZE = 64 * 1024

Changes = set[tuple[watchfiles.Change, str]]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


# File systems whose every change is made through this kernel, so that inotify reports
# it. On a network or FUSE file system a change made elsewhere sends no event: there only
# the owner's periodic rescan notices it.
_LOCAL_FILESYSTEMS = frozenset(
    {
        "bcachefs",
        "btrfs",
        "exfat",
        "ext2",
        "ext3",
        "ext4",
        "f2fs",
        "hfsplus",
        "jfs",
        "nilfs2",
        "ntfs3",
        "overlay",
        "ramfs",
        "reiserfs",
        "tmpfs",
        "vfat",
        "xfs",
        "zfs",
    }
)


def _filesystem_types() -> dict[tuple[int, int], str]:
    """(major, minor) of each mounted device → its file system type, from mountinfo."""
    types: dict[tuple[int, int], str] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if "-" not in fields or len(fields) < 3:
                    continue
                major, _, minor = fields[2].partition(":")
                fstype = fields[fields.index("-") + 1]
                if major.isdigit() and minor.isdigit():
                    types[int(major), int(minor)] = fstype
    except OSError:
        pass
    return types


def sees_every_change(directories: Iterable[str]) -> bool:
    """Whether inotify reports every change in ``directories``: each is on a local file
    system (its type is known and local). Unknown counts as not: the safe answer."""
    types: dict[tuple[int, int], str] | None = None
    for directory in directories:
        try:
            device = os.stat(directory).st_dev
        except OSError:
            return False
        if types is None:
            types = _filesystem_types()
        if types.get((os.major(device), os.minor(device))) not in _LOCAL_FILESYSTEMS:
            return False
    return True


def available() -> bool:
    """Whether inotify can be used here (Linux, with a C library that has it)."""
    return _LIBC is not None


class InotifyWatcher:
    """Watches ``directories``; calls ``on_changes`` on the loop with each batch read.

    A directory that stops being watchable (deleted, moved, unmounted) or an overflow of
    the kernel's queue is reported as ``on_lost()``: the owner rescans and watches anew.
    ``close()`` stops everything; it is idempotent.
    """

    def __init__(
        self,
        directories: Iterable[str],
        on_changes: Callable[[Changes], None],
        on_lost: Callable[[], None],
    ) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "inotify is not available here")
        self._on_changes = on_changes
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self._fd = fd
        self._directories: dict[int, str] = {}
        try:
            for directory in directories:
                wd = _LIBC.inotify_add_watch(fd, os.fsencode(directory), _WATCH_MASK)
                if wd < 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code), directory)
                self._directories[wd] = directory
            self._loop.add_reader(fd, self._readable)
        except BaseException:
            os.close(fd)
            self._fd = -1
            raise

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1

    def _readable(self) -> None:
        changes: Changes = set()
        lost = False
        while self._fd >= 0:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                lost = True
                break
            lost = self._parse(data, changes) or lost
            if len(data) < _READ_SIZE // 2:
                break  # what the kernel had is read; what comes later wakes us again
        if changes:
            self._on_changes(changes)
        if lost:
            self._on_lost()

    def _parse(self, data: bytes, changes: Changes) -> bool:
        """Add ``data``'s events to ``changes``; True when a watch or events were lost."""
        lost = False
        position = 0
        while position + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, position)
            raw_name = data[position + _HEADER.size : position + _HEADER.size + length]
            position += _HEADER.size + length
            if mask & (_IN_Q_OVERFLOW | _IN_IGNORED | _IN_DELETE_SELF | _IN_MOVE_SELF):
                lost = True
                continue
            directory = self._directories.get(wd)
            if directory is None:
                continue
            name = os.fsdecode(raw_name.rstrip(b"\0"))
            path = os.path.join(directory, name) if name else directory
            if mask & (_IN_CREATE | _IN_MOVED_TO):
                changes.add((watchfiles.Change.added, path))
            elif mask & (_IN_DELETE | _IN_MOVED_FROM):
                changes.add((watchfiles.Change.deleted, path))
            else:
                changes.add((watchfiles.Change.modified, path))
        return lost
