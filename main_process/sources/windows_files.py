"""Opening log files on Windows so that the program writing them can still rename and
delete them while they are followed.

Python's ``open``/``os.open`` on Windows share only read and write access, so while a log
is open no one may rename or delete it: a game could not move its ``Game.log`` aside at
its next launch. Filebeat, Fluent Bit and Vector open with ``FILE_SHARE_DELETE`` for this
reason, and so does this module: ``CreateFileW(GENERIC_READ, FILE_SHARE_READ |
FILE_SHARE_WRITE | FILE_SHARE_DELETE, OPEN_EXISTING)``, the handle then wrapped in a C
descriptor (``msvcrt.open_osfhandle``) that the follower reads like any other.

A file deleted while open is only *pending* deletion on Windows: its name stays taken
until the last handle closes, so the program cannot create a new file of that name.
``deletion_pending`` tells, and the follower closes such a file as soon as it has read it
to its end instead of waiting for it to go idle.

Symbolic links (reparse points) are opened as themselves (``FILE_FLAG_OPEN_REPARSE_POINT``)
unless the follow-symlinks policy allows them, and refused, like ``O_NOFOLLOW`` elsewhere.

Owns: those calls and their constants. Must not: decide what to follow. Only Windows runs
it; the tests drive it with stand-ins for ``kernel32`` and ``msvcrt``.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Protocol

GENERIC_READ = 0x80000000
FILE_SHARE_READ = 0x1
FILE_SHARE_WRITE = 0x2
FILE_SHARE_DELETE = 0x4
SHARE_EVERYTHING = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
OPEN_EXISTING = 3
FILE_ATTRIBUTE_NORMAL = 0x80
FILE_ATTRIBUTE_REPARSE_POINT = 0x400
FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000
INVALID_HANDLE_VALUE = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1
# FILE_INFO_BY_HANDLE_CLASS
FILE_BASIC_INFO_CLASS = 0
FILE_STANDARD_INFO_CLASS = 1

ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_ACCESS_DENIED = 5
ERROR_SHARING_VIOLATION = 32


class FileBasicInfo(ctypes.Structure):
    _fields_ = (
        ("CreationTime", ctypes.c_int64),
        ("LastAccessTime", ctypes.c_int64),
        ("LastWriteTime", ctypes.c_int64),
        ("ChangeTime", ctypes.c_int64),
        ("FileAttributes", ctypes.c_uint32),
    )


class FileStandardInfo(ctypes.Structure):
    _fields_ = (
        ("AllocationSize", ctypes.c_int64),
        ("EndOfFile", ctypes.c_int64),
        ("NumberOfLinks", ctypes.c_uint32),
        ("DeletePending", ctypes.c_ubyte),
        ("Directory", ctypes.c_ubyte),
    )


class Kernel32(Protocol):
    """The calls of ``kernel32`` used here (``ctypes.windll.kernel32`` on Windows)."""

    def CreateFileW(
        self,
        name: str,
        access: int,
        share: int,
        security: Any,
        disposition: int,
        flags: int,
        template: Any,
    ) -> int: ...

    def CloseHandle(self, handle: int) -> int: ...

    def GetFileInformationByHandleEx(
        self, handle: int, information_class: int, buffer: Any, size: int
    ) -> int: ...

    def GetLastError(self) -> int: ...


class Msvcrt(Protocol):
    """The calls of ``msvcrt`` used here."""

    def open_osfhandle(self, handle: int, flags: int) -> int: ...
    def get_osfhandle(self, fd: int) -> int: ...


class SymlinkRefused(Exception):
    """The path is a symbolic link (a reparse point) and links are not followed here."""


def system_calls() -> tuple[Kernel32, Msvcrt]:  # pragma: no cover - Windows only
    import msvcrt

    windll: Any = getattr(ctypes, "windll")  # noqa: B009 - absent off Windows
    kernel32: Any = windll.kernel32
    kernel32.CreateFileW.restype = ctypes.c_void_p
    module: Any = msvcrt
    return kernel32, module


def open_shared(
    path: str,
    *,
    follow_symlink: bool,
    calls: tuple[Kernel32, Msvcrt] | None = None,
) -> int:
    """A read-only descriptor of ``path`` that lets others rename and delete the file.

    Raises ``FileNotFoundError``, ``PermissionError`` or ``OSError`` as ``os.open`` would,
    and ``SymlinkRefused`` for a link when ``follow_symlink`` is false.
    """
    kernel32, msvcrt = calls if calls is not None else system_calls()
    flags = FILE_ATTRIBUTE_NORMAL | (0 if follow_symlink else FILE_FLAG_OPEN_REPARSE_POINT)
    handle = kernel32.CreateFileW(
        path, GENERIC_READ, SHARE_EVERYTHING, None, OPEN_EXISTING, flags, None
    )
    if handle is None or handle == INVALID_HANDLE_VALUE or handle == -1:
        raise _error(kernel32.GetLastError(), path)
    try:
        if not follow_symlink:
            basic = FileBasicInfo()
            if (
                kernel32.GetFileInformationByHandleEx(
                    handle, FILE_BASIC_INFO_CLASS, ctypes.byref(basic), ctypes.sizeof(basic)
                )
                and basic.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT
            ):
                raise SymlinkRefused(path)
        # From here the descriptor owns the handle (closing it closes the handle).
        return msvcrt.open_osfhandle(handle, os.O_RDONLY)
    except BaseException:
        kernel32.CloseHandle(handle)
        raise


def deletion_pending(fd: int, calls: tuple[Kernel32, Msvcrt] | None = None) -> bool:
    """Whether the open file was deleted and waits for its last handle to close."""
    kernel32, msvcrt = calls if calls is not None else system_calls()
    info = FileStandardInfo()
    if not kernel32.GetFileInformationByHandleEx(
        msvcrt.get_osfhandle(fd), FILE_STANDARD_INFO_CLASS, ctypes.byref(info), ctypes.sizeof(info)
    ):
        return False
    return bool(info.DeletePending)


def _error(code: int, path: str) -> OSError:
    if code in (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND):
        return FileNotFoundError(code, "The system cannot find the file specified", path)
    if code == ERROR_ACCESS_DENIED:
        return PermissionError(code, "Access is denied", path)
    if code == ERROR_SHARING_VIOLATION:
        return OSError(code, "The file is being used by another process", path)
    return OSError(code, f"Windows error {code}", path)
