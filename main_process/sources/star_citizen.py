"""The Star Citizen preset (``--game star-citizen``): where the game's logs are, and how it
rotates them.

Owns: finding installs, the channels in an install, and what the preset follows.

- **Installs.** ``--game-dir DIR`` when given (an install, a channel folder, the library
  folder holding ``StarCitizen``, or a Wine prefix). Else, on Windows: the folders the RSI
  launcher's log names (``%APPDATA%\\rsilauncher\\logs\\log.log``, where readable: it lists
  the library folder the user chose) and ``C:\\Program Files\\Roberts Space Industries\\
  StarCitizen``. On Linux and macOS: the Wine prefixes ``$WINEPREFIX``, ``~/.wine`` and
  ``~/Games/star-citizen`` (Lutris' default), each with ``drive_c/Program Files/Roberts
  Space Industries/StarCitizen``, and what the launcher's log inside each prefix names.
- **Channels.** In an install: ``LIVE``, ``PTU``, ``EPTU``, and any other folder holding a
  ``Game.log``.
- **What is followed.** Each channel's ``Game.log`` (a source, followed once it appears)
  and its ``logbackups/*.log`` (backlog: uploaded once each, oldest first). At every
  launch the game moves the previous ``Game.log`` into ``logbackups/`` under a name like
  ``Game Build(9508788) 07 Feb 25 (19 38 41).log`` and starts a new one: that move is a
  rotation of the channel's log (``rotation_dirs``: ``sources.SourceSet`` looks for the
  log's earlier generations there), so the moved file is read to its end, never uploaded
  a second time as backlog, and found again when the move happened while the client was
  not running.

Must not: read the logs (``SourceSet`` does), or fail: no install found is one sentence
(``GamePreset.trouble``) and the client runs on with its other sources.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

GAME = "star-citizen"
LOG_NAME = "Game.log"
BACKUP_DIR = "logbackups"
KNOWN_CHANNELS = ("LIVE", "PTU", "EPTU")
_INSTALL_IN_LIBRARY = Path("StarCitizen")
_LIBRARY_IN_PREFIX = Path("drive_c") / "Program Files" / "Roberts Space Industries"
_WINDOWS_DEFAULT = PureWindowsPath(r"C:\Program Files\Roberts Space Industries\StarCitizen")
_LAUNCHER_LOGS = (Path("rsilauncher") / "logs" / "log.log", Path("rsilauncher") / "log.log")
# A Windows path ending in \StarCitizen, as the launcher writes the folders it checks.
_INSTALL_IN_LOG = re.compile(r"([A-Za-z]:\\[^\"<>|,\r\n]*?\\StarCitizen)\b")
_LAUNCHER_LOG_READ_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class GameChannel:
    name: str
    directory: Path

    @property
    def log(self) -> Path:
        return self.directory / LOG_NAME

    @property
    def backups(self) -> Path:
        return self.directory / BACKUP_DIR


@dataclass(frozen=True, slots=True)
class GameInstall:
    root: Path
    channels: tuple[GameChannel, ...]


@dataclass(frozen=True, slots=True)
class GamePreset:
    """What ``--game star-citizen`` adds to the sources."""

    installs: tuple[GameInstall, ...]
    looked_in: tuple[Path, ...]
    sources: tuple[str, ...] = ()
    backlog: tuple[str, ...] = ()
    rotation_dirs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per followed ``Game.log``: globs of where its earlier generations are moved."""

    @property
    def description(self) -> str:
        """Which installs and channels are followed, for status and windows."""
        if not self.installs:
            return ""
        parts = [
            f"{', '.join(c.name for c in install.channels)} in {install.root}"
            for install in self.installs
        ]
        return "Star Citizen: " + "; ".join(parts)

    @property
    def trouble(self) -> str | None:
        """One sentence when no install was found."""
        if self.installs:
            return None
        looked = ", ".join(str(p) for p in self.looked_in) or "nowhere"
        return (
            f"No Star Citizen install was found (looked in {looked}); "
            "name it with --game-dir DIR (or the game_dir setting)."
        )


def star_citizen_preset(
    game_dir: Path | None,
    *,
    platform: str = sys.platform,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> GamePreset:
    """The preset for the installs found (see the module docstring)."""
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    candidates = (
        _candidates_of_game_dir(game_dir.expanduser().absolute())
        if game_dir is not None
        else _default_candidates(platform, environ, home)
    )
    installs: list[GameInstall] = []
    seen: set[Path] = set()
    for root in candidates:
        if root in seen:
            continue
        seen.add(root)
        channels = _channels(root)
        if channels:
            installs.append(GameInstall(root, channels))
    sources: list[str] = []
    backlog: list[str] = []
    rotation_dirs: dict[str, tuple[str, ...]] = {}
    for install in installs:
        for channel in install.channels:
            # Patterns: the folders' own names are escaped ("[" in a path is not a glob).
            log = glob.escape(str(channel.log))
            backups = os.path.join(glob.escape(str(channel.backups)), "*.log")
            sources.append(log)
            backlog.append(backups)
            rotation_dirs[str(channel.log)] = (backups,)
    return GamePreset(
        tuple(installs), tuple(candidates), tuple(sources), tuple(backlog), rotation_dirs
    )


def _channels(root: Path) -> tuple[GameChannel, ...]:
    """The channel folders of an install; a channel folder given as the install is one."""
    if (root / LOG_NAME).is_file() or (root / BACKUP_DIR).is_dir():
        return (GameChannel(root.name, root),)
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return ()
    return tuple(
        GameChannel(entry.name, entry)
        for entry in entries
        if entry.is_dir() and (entry.name in KNOWN_CHANNELS or (entry / LOG_NAME).is_file())
    )


def _candidates_of_game_dir(directory: Path) -> list[Path]:
    """``--game-dir``: an install or a channel folder, a library folder, or a prefix."""
    candidates = [directory, directory / _INSTALL_IN_LIBRARY]
    candidates.append(directory / _LIBRARY_IN_PREFIX / _INSTALL_IN_LIBRARY)
    return [c for c in candidates if c.is_dir()] or [directory]


def _default_candidates(platform: str, environ: Mapping[str, str], home: Path) -> list[Path]:
    if platform == "win32":
        candidates: list[Path] = []
        appdata = environ.get("APPDATA")
        if appdata:
            # Path(str(…)): a Windows path on Windows (and one odd name elsewhere, where
            # only the tests ask for Windows' places).
            candidates += [Path(str(p)) for p in _installs_named_by_launcher(Path(appdata))]
        candidates.append(Path(str(_WINDOWS_DEFAULT)))
        return candidates
    prefixes = [Path(environ["WINEPREFIX"])] if environ.get("WINEPREFIX") else []
    prefixes += [home / ".wine", home / "Games" / "star-citizen"]
    candidates = []
    for prefix in prefixes:
        candidates.append(prefix / _LIBRARY_IN_PREFIX / _INSTALL_IN_LIBRARY)
        users = prefix / "drive_c" / "users"
        try:
            user_dirs = sorted(d for d in users.iterdir() if d.is_dir())
        except OSError:
            user_dirs = []
        for user in user_dirs:
            roaming = user / "AppData" / "Roaming"
            for named in _installs_named_by_launcher(roaming):
                candidates.append(_in_prefix(prefix, named))
    return candidates


def _installs_named_by_launcher(roaming: Path) -> list[PureWindowsPath]:
    """The ``…\\StarCitizen`` folders the RSI launcher's log mentions (newest last)."""
    found: list[PureWindowsPath] = []
    for relative in _LAUNCHER_LOGS:
        path = roaming / relative
        try:
            with path.open("rb") as file:
                file.seek(max(0, path.stat().st_size - _LAUNCHER_LOG_READ_LIMIT))
                text = file.read().decode("utf-8", "replace")
        except OSError:
            continue
        for match in _INSTALL_IN_LOG.finditer(text):
            named = PureWindowsPath(match.group(1))
            if named not in found:
                found.append(named)
    return found


def _in_prefix(prefix: Path, windows_path: PureWindowsPath) -> Path:
    """A ``C:\\…`` path inside a Wine prefix (``drive_c/…``; other drives are Wine's
    ``dosdevices`` links)."""
    drive = windows_path.drive.rstrip(":").lower()
    base = prefix / "drive_c" if drive == "c" else prefix / "dosdevices" / f"{drive}:"
    return base.joinpath(*windows_path.parts[1:])
