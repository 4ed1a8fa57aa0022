"""Where the main process keeps its files on disk.

Owns: choosing the data directory (``--data-dir`` flag, else ``LOG_MONITOR_DATA_DIR``,
else ``platformdirs.user_data_dir("log-monitor")``), the names of the files inside it,
creating it private (0700) when it does not exist yet, and moving a damaged file aside
under a timestamped name so it is kept for the user instead of deleted; and where the
app's icon, shipped with it, is (``APP_ICON_FILE``).

Must not: read or write the files themselves (``credentials.py`` and ``spool/chunks.py`` do), or
change the permissions of a directory the user already had.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

APP_NAME = "log-monitor"
DATA_DIR_ENV = "LOG_MONITOR_DATA_DIR"

SPOOL_FILENAME = "spool.sqlite3"
CLIENT_ID_FILENAME = "client-id"
TOKENS_FILENAME = "tokens.json"
SERVER_DIRNAME = "server"

# The app's icon (launchers, notifications), shipped among the renderer's static files and
# found by its path: the main process reads the file and loads no code of the renderer.
APP_ICON_FILE = Path(__file__).resolve().parent.parent / "renderer" / "static" / "icon.svg"


def default_data_dir() -> Path:
    """The per-user data directory platformdirs picks for this application."""
    # appauthor=False: on Windows the default would nest "log-monitor\log-monitor".
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resolve_data_dir(
    flag: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The data directory to use: the flag, else the environment variable, else the default.

    Empty strings count as unset, so ``LOG_MONITOR_DATA_DIR=`` falls back to the default.
    The result is absolute, so every process started from any working directory agrees.
    """
    env = os.environ if environ is None else environ
    if flag is not None and os.fspath(flag) != "":
        chosen = Path(flag)
    elif env.get(DATA_DIR_ENV):
        chosen = Path(env[DATA_DIR_ENV])
    else:
        chosen = default_data_dir()
    return chosen.expanduser().absolute()


def instance_suffix(data_dir: Path) -> str:
    """``""`` for the default data dir, else ``-`` and 8 hex digits of the data dir: what
    per-user names outside the data dir (log files, autostart entries) end with, so two
    instances on two data dirs do not share them."""
    if data_dir.absolute() == default_data_dir():
        return ""
    return "-" + hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:8]


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 if missing; return it.

    An existing directory keeps its mode: the user may have pointed ``--data-dir`` at a
    directory of their own, and the secrets inside are protected file by file (0600).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def set_aside(path: Path, reason: str = "corrupt") -> Path:
    """Rename ``path`` to ``<name>.<reason>-<UTC timestamp>`` in the same directory.

    Used for damaged files: the user's data is kept for inspection, never deleted, and a
    fresh file can take the original name. Returns the new path.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.{reason}-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.{reason}-{stamp}-{counter}")
    os.replace(path, target)
    return target


@dataclass(frozen=True, slots=True)
class DataPaths:
    """The files of one installation, all under one data directory."""

    root: Path

    @classmethod
    def resolve(
        cls,
        flag: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> DataPaths:
        return cls(resolve_data_dir(flag, environ))

    @property
    def spool(self) -> Path:
        return self.root / SPOOL_FILENAME

    @property
    def client_id(self) -> Path:
        return self.root / CLIENT_ID_FILENAME

    @property
    def tokens(self) -> Path:
        return self.root / TOKENS_FILENAME

    @property
    def server_data(self) -> Path:
        """Data directory of the embedded reference server."""
        return self.root / SERVER_DIRNAME
