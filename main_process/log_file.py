"""The log file a user attaches to a bug report.

Owns: where each process of an instance writes its log (the platform's user log dir from
platformdirs, e.g. ``~/.local/state/log-monitor/log`` on Linux, ``~/Library/Logs/
log-monitor`` on macOS, ``%LOCALAPPDATA%\\log-monitor\\Logs`` on Windows; ``main.log`` for
the main process and ``windows.log`` for the renderer host, with the data dir's
``instance_suffix`` when it is not the default one), the size bound (1 MiB, then rotated:
``main.log.1`` … ``.3``, 4 MiB at most per file set), and the logging setup that writes
both to stderr and to that file.

Rules: the file is private (0600, in a 0700 directory): it names paths and servers,
though never a secret — tokens and passwords are never logged anywhere (the tests read
this file too). A log dir that cannot be written is one warning on stderr, and logging
goes on to stderr alone: a log file is never a reason not to ship.

Must not: decide what is logged (each module does) or delete anything but its own
rotated files.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import platformdirs

from main_process.paths import APP_NAME, instance_suffix

Component = Literal["main", "windows"]

MAX_BYTES = 1024 * 1024
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY_LOGGERS = ("socketio", "engineio", "aiohttp", "uvicorn", "websockets", "watchfiles")
"""The libraries' own loggers narrate every packet; ours say what matters."""


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def log_path(data_dir: Path, component: Component = "main") -> Path:
    """The log file of one process of the instance that owns ``data_dir``."""
    return log_dir() / f"{component}{instance_suffix(data_dir)}.log"


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` whose files are created 0600."""

    def _open(self):  # type: ignore[no-untyped-def]  # typeshed: the base's own signature
        previous = os.umask(0o077)
        try:
            return super()._open()
        finally:
            os.umask(previous)


def configure_logging(level: str) -> None:
    """Log at ``level`` to stderr (the file comes with ``add_log_file``)."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper()))
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stream)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_log_file(data_dir: Path, component: Component = "main") -> Path | None:
    """Also log to the instance's log file (only the process that owns it: the primary
    main process, the renderer host); its path, or None when it cannot be written."""
    path = log_path(data_dir, component)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = _PrivateRotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "cannot write the log file %s (%s); logging to stderr only", path, exc.strerror or exc
        )
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    return path


def last_lines(path: Path, count: int) -> tuple[list[str], int]:
    """The last ``count`` lines of the log (from its rotated files too when it is short),
    and the size of ``path`` they were read at (where following it goes on)."""
    lines: list[str] = []
    size = 0
    for file in reversed(list(_files_oldest_first(path))):
        try:
            data = file.read_bytes()
        except OSError:
            continue
        if file == path:
            size = len(data)
        lines = data.decode("utf-8", "replace").splitlines() + lines
        if len(lines) >= count:
            break
    return (lines[-count:] if count else []), size


def _files_oldest_first(path: Path) -> Iterator[Path]:
    for number in range(BACKUPS, 0, -1):
        rotated = path.with_name(f"{path.name}.{number}")
        if rotated.exists():
            yield rotated
    if path.exists():
        yield path
