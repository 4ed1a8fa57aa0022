"""Single-instance lock: one main process per data directory (Electron's
``requestSingleInstanceLock``).

Owns: the lock file ``instance.lock`` in the data directory, held for the life of the
main process and containing its pid; the question "is it held?" asked without taking it
(``InstanceLock.is_locked``); and the second instance's way out: ask the primary to open a
window (``ask_primary_to_open_window``) and exit 0.

Why an OS lock and not "pid file exists": the kernel releases the lock when the holder
dies, however it dies, kill -9 included. So a stale lock needs no detection, no prompt and
no pid guessing: the next ``acquire`` just succeeds. The pid inside is only informative
(shown in messages).

Which lock: on Linux an open file description lock (``F_OFD_SETLK``), because
``F_OFD_GETLK`` tells whether it is held without taking it: a viewer asking "is a main
process running?" must never hold the lock, not even for a moment, or a main process
starting in that moment would find it taken and believe another one runs. (OFD locks
belong to the open file, like ``flock``, so two ``InstanceLock`` objects of one process
exclude each other, and closing some other descriptor of the file releases nothing.)
On Windows, ``msvcrt.locking``: the locked byte cannot be read by others, which is the
query. Elsewhere (macOS, BSD), ``flock``, which has no query: the probe takes a shared
lock for an instant, and ``log-monitor run`` copes with such a moment by waiting for the
lock or for the holder's answer instead of trusting one failed attempt.

Must not: bind sockets; the primary binds its endpoints only after ``acquire()`` returned
True, so a second instance can never steal the first one's ``ipc://`` socket files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from ipc.commands import SyncCommandClient
from ipc.endpoints import Endpoints
from ipc.messages import OpenWindow, Reply

LOCK_FILENAME: Final = "instance.lock"


class InstanceLock:
    """``acquire()`` → True if we are the primary instance for ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / LOCK_FILENAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another live process holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            locked = _try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return False
        # Ours now: replace whatever pid a dead holder left.
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return True

    def is_locked(self) -> bool:
        """Whether any process (this one included) holds the lock, asked without taking it."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return False  # no main process ever started here
        try:
            return _is_locked(fd)
        finally:
            os.close(fd)

    def holder_pid(self) -> int | None:
        """The pid written by the holder (informative; may be stale if none holds it)."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # The file stays: removing it would race with a new holder that opened it.
        _unlock(fd)
        os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            # One byte at offset 0; the pid is written after it is locked (Windows
            # locks are mandatory, so readers use holder_pid only as a hint).
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    def _is_locked(fd: int) -> bool:
        # Mandatory locking: reading a byte another handle has locked fails (lock
        # violation, reported as EACCES), and reading takes no lock.
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            os.read(fd, 1)
        except PermissionError:
            return True
        return False

else:
    import errno
    import fcntl
    import struct

    _BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)

    if hasattr(fcntl, "F_OFD_SETLK"):
        # struct flock {short l_type; short l_whence; off_t l_start; off_t l_len;
        # pid_t l_pid;} with native alignment, padded to the struct's C size.
        _FLOCK = struct.Struct("hhqqi")
        _FLOCK_PADDING = bytes(-_FLOCK.size % 8)

        def _flock_request(lock_type: int) -> bytes:
            # Whole file (start 0, length 0 = to the end and beyond); l_pid must be 0
            # for OFD requests.
            return _FLOCK.pack(lock_type, os.SEEK_SET, 0, 0, 0) + _FLOCK_PADDING

        def _try_lock(fd: int) -> bool:
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_request(fcntl.F_WRLCK))
            except OSError as error:
                if error.errno in _BUSY:
                    return False
                raise
            return True

        def _unlock(fd: int) -> None:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_request(fcntl.F_UNLCK))

        def _is_locked(fd: int) -> bool:
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock_request(fcntl.F_WRLCK))
            lock_type: int = _FLOCK.unpack_from(answer)[0]
            return lock_type != fcntl.F_UNLCK

    else:

        def _try_lock(fd: int) -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in _BUSY:
                    return False
                raise
            return True

        def _unlock(fd: int) -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)

        def _is_locked(fd: int) -> bool:
            # flock has no query: a shared lock for an instant is the closest there is.
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in _BUSY:
                    return True
                raise
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False


def ask_primary_to_open_window(
    data_dir: str | os.PathLike[str],
    *,
    timeout: float = 5.0,
    runtime_base: Path | None = None,
) -> Reply:
    """What a second instance does: ask the running primary to open a window.

    Raises ``NotRunningError`` if the primary has not saved its endpoints (yet), and
    ``CommandTimeoutError`` if it does not answer.
    """
    endpoints = Endpoints.discover(data_dir, base=runtime_base)
    with SyncCommandClient(endpoints.commands, curve=endpoints.curve) as client:
        return client.request(OpenWindow(), timeout=timeout)
