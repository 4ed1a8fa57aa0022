"""How log files are opened on Windows (``main_process.sources.windows_files``), driven here with
stand-ins for ``kernel32`` and ``msvcrt``: the share flags that let the game rename and
delete its log while it is followed, the refusal of a reparse point (a symbolic link),
errors as ``os.open`` would raise them, and a pending deletion. Windows itself runs this
module in the CI workflow (``.github/workflows/ci.yml``), not here."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import pytest

from main_process.sources.windows_files import (
    FILE_ATTRIBUTE_NORMAL,
    FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_BASIC_INFO_CLASS,
    FILE_FLAG_OPEN_REPARSE_POINT,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    FILE_STANDARD_INFO_CLASS,
    GENERIC_READ,
    INVALID_HANDLE_VALUE,
    OPEN_EXISTING,
    SymlinkRefused,
    deletion_pending,
    open_shared,
)


class StandInKernel32:
    """Opens the real file underneath (so the descriptor reads), records every call."""

    def __init__(self, attributes: int = FILE_ATTRIBUTE_NORMAL, error: int = 0) -> None:
        self.attributes = attributes
        self.error = error
        self.delete_pending = False
        self.created: list[tuple[Any, ...]] = []
        self.closed: list[int] = []
        self.handles: dict[int, str] = {}

    def CreateFileW(
        self,
        name: str,
        access: int,
        share: int,
        security: Any,
        disposition: int,
        flags: int,
        template: Any,
    ) -> int:
        self.created.append((name, access, share, security, disposition, flags, template))
        if self.error:
            return INVALID_HANDLE_VALUE
        handle = 1000 + len(self.created)
        self.handles[handle] = name
        return handle

    def CloseHandle(self, handle: int) -> int:
        self.closed.append(handle)
        return 1

    def GetFileInformationByHandleEx(
        self, handle: int, information_class: int, buffer: Any, size: int
    ) -> int:
        info = buffer._obj
        assert size == ctypes.sizeof(info)
        if information_class == FILE_BASIC_INFO_CLASS:
            info.FileAttributes = self.attributes
        elif information_class == FILE_STANDARD_INFO_CLASS:
            info.DeletePending = 1 if self.delete_pending else 0
        return 1

    def GetLastError(self) -> int:
        return self.error


class StandInMsvcrt:
    def __init__(self, kernel32: StandInKernel32) -> None:
        self.kernel32 = kernel32
        self.handle_of: dict[int, int] = {}

    def open_osfhandle(self, handle: int, flags: int) -> int:
        assert flags == os.O_RDONLY
        fd = os.open(self.kernel32.handles[handle], os.O_RDONLY)
        self.handle_of[fd] = handle
        return fd

    def get_osfhandle(self, fd: int) -> int:
        return self.handle_of[fd]


def test_log_files_are_opened_sharing_read_write_and_delete(tmp_path: Path) -> None:
    log = tmp_path / "Game.log"
    log.write_bytes(b"<2025-02-07T19:38:41.000Z> Log started\n")
    kernel32 = StandInKernel32()
    fd = open_shared(str(log), follow_symlink=False, calls=(kernel32, StandInMsvcrt(kernel32)))
    try:
        assert os.read(fd, 100).startswith(b"<2025-02-07")
    finally:
        os.close(fd)
    ((name, access, share, security, disposition, flags, template),) = kernel32.created
    assert name == str(log)
    assert access == GENERIC_READ
    assert share == FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
    assert disposition == OPEN_EXISTING
    assert flags == FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT
    assert security is None
    assert template is None
    assert kernel32.closed == []  # the descriptor owns the handle


def test_a_reparse_point_is_refused_unless_links_are_followed(tmp_path: Path) -> None:
    log = tmp_path / "latest.log"
    log.write_bytes(b"line\n")
    kernel32 = StandInKernel32(attributes=FILE_ATTRIBUTE_NORMAL | FILE_ATTRIBUTE_REPARSE_POINT)
    calls = (kernel32, StandInMsvcrt(kernel32))
    with pytest.raises(SymlinkRefused):
        open_shared(str(log), follow_symlink=False, calls=calls)
    assert kernel32.closed == [1001]
    fd = open_shared(str(log), follow_symlink=True, calls=calls)
    os.close(fd)
    assert kernel32.created[-1][5] == FILE_ATTRIBUTE_NORMAL  # the target is opened


@pytest.mark.parametrize(
    ("code", "kind"),
    [(2, FileNotFoundError), (3, FileNotFoundError), (5, PermissionError), (32, OSError)],
)
def test_errors_are_what_os_open_would_raise(
    tmp_path: Path, code: int, kind: type[OSError]
) -> None:
    kernel32 = StandInKernel32(error=code)
    with pytest.raises(kind) as raised:
        open_shared(
            str(tmp_path / "x.log"), follow_symlink=False, calls=(kernel32, StandInMsvcrt(kernel32))
        )
    assert raised.value.errno == code
    assert raised.value.filename == str(tmp_path / "x.log")


def test_a_pending_deletion_is_seen(tmp_path: Path) -> None:
    log = tmp_path / "Game.log"
    log.write_bytes(b"line\n")
    kernel32 = StandInKernel32()
    msvcrt = StandInMsvcrt(kernel32)
    fd = open_shared(str(log), follow_symlink=False, calls=(kernel32, msvcrt))
    try:
        assert deletion_pending(fd, calls=(kernel32, msvcrt)) is False
        kernel32.delete_pending = True
        assert deletion_pending(fd, calls=(kernel32, msvcrt)) is True
    finally:
        os.close(fd)
