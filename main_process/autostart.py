"""Starting at login, and the entry in the desktop's application menu.

Owns what ``log-monitor autostart on|off|status`` writes and removes, per platform:

- Linux and the BSDs (the freedesktop.org specifications): the autostart entry
  ``$XDG_CONFIG_HOME/autostart/log-monitor.desktop``, and a launcher in the application
  menu, ``$XDG_DATA_HOME/applications/log-monitor.desktop`` with its icon
  ``$XDG_DATA_HOME/icons/hicolor/scalable/apps/log-monitor.svg`` (the SVG shipped in the
  package);
- macOS: a LaunchAgent, ``~/Library/LaunchAgents/org.log-monitor.client.plist``
  (``RunAtLoad``);
- Windows: the value ``log-monitor`` under ``HKCU\\Software\\Microsoft\\Windows\\
  CurrentVersion\\Run``.

The entry starts ``log-monitor run --windows 0`` for the same data dir (and settings file,
when one was named): the sources come from the settings, no window opens, and the tray is
what the user sees (where the desktop has one). The launcher starts ``log-monitor run``,
which opens a window, or asks the running instance for one.

Rules: ``off`` removes what ``on`` wrote and nothing else — a file is removed only while it
still carries ``on``'s marker line, a registry value only while it still holds a command
``on`` wrote, so a user's own entries of the same name are left alone (and said so).
Commands are absolute (this Python and ``-m main_process``), so they work without a PATH.
Each data dir other than the default gets its own entries (names end with a short hash of
the data dir). Must not: start or stop anything.
"""

from __future__ import annotations

import os
import plistlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ipc.atomic_file import write_file_atomically
from main_process.paths import APP_ICON_FILE, default_data_dir, instance_suffix

APP_ID = "log-monitor"
LAUNCH_AGENT_LABEL = "org.log-monitor.client"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
MARKER_KEY = "X-Log-Monitor-Written-By"
"""The line ``on`` puts in every .desktop file it writes (``off`` removes only those)."""
MARKER_VALUE = "log-monitor autostart"


class AutostartError(Exception):
    """One sentence for the user (a file or key that cannot be written or removed)."""


@dataclass(frozen=True, slots=True)
class AutostartReport:
    """What ``status`` (and ``on``/``off``) tell the user."""

    enabled: bool
    launcher: bool
    written: tuple[str, ...]
    """Where the entries are (paths or the registry value's name)."""
    notes: tuple[str, ...] = ()
    """Sentences about what was left alone or could not be done here."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """How the entry starts the client: this interpreter, the data dir, the settings."""

    python: str
    data_dir: Path
    config: Path | None

    def arguments(self, *run_args: str) -> list[str]:
        arguments = [self.python, "-m", "main_process", "run", *run_args]
        if self.data_dir != default_data_dir():
            arguments += ["--data-dir", str(self.data_dir)]
        if self.config is not None:
            arguments += ["--config", str(self.config)]
        return arguments

    @property
    def suffix(self) -> str:
        """``""`` for the default data dir, else ``-<8 hex digits>`` of the data dir."""
        return instance_suffix(self.data_dir)


def invocation(data_dir: Path, config: Path | None) -> Invocation:
    python = sys.executable
    if sys.platform == "win32":
        # pythonw.exe: no console window at every login.
        windowed = Path(python).with_name("pythonw.exe")
        if windowed.exists():
            python = str(windowed)
    return Invocation(python, data_dir.absolute(), None if config is None else config.absolute())


class Autostart(Protocol):
    def enable(self) -> AutostartReport: ...
    def disable(self) -> AutostartReport: ...
    def status(self) -> AutostartReport: ...


# ------------------------------------------------------------------------ freedesktop


def desktop_exec(arguments: Sequence[str]) -> str:
    """An ``Exec=`` value (Desktop Entry Specification: quote arguments holding reserved
    characters; inside quotes escape ``"``, `` ` ``, ``$`` and ``\\``; ``%`` is doubled)."""
    reserved = set(" \t\n\"'\\><~|&;$*?#()`")
    quoted: list[str] = []
    for argument in arguments:
        argument = argument.replace("%", "%%")
        if any(character in reserved for character in argument) or not argument:
            escaped = "".join(f"\\{c}" if c in '"`$\\' else c for c in argument)
            quoted.append(f'"{escaped}"')
        else:
            quoted.append(argument)
    return " ".join(quoted)


def _desktop_value(text: str) -> str:
    """A string value of a .desktop key (escapes for newline, tab and backslash)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


class FreedesktopAutostart:
    """The XDG autostart entry and the application launcher (see the module docstring)."""

    def __init__(self, run: Invocation, environ: Mapping[str, str], home: Path) -> None:
        self._run = run
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        data_home = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
        name = f"{APP_ID}{run.suffix}"
        self.autostart_file = config_home / "autostart" / f"{name}.desktop"
        self.launcher_file = data_home / "applications" / f"{name}.desktop"
        self.icon_file = data_home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"

    def _entry(self, name: str, comment: str, arguments: Sequence[str], autostart: bool) -> str:
        lines = [
            "[Desktop Entry]",
            "Type=Application",
            f"Name={_desktop_value(name)}",
            f"Comment={_desktop_value(comment)}",
            f"Exec={desktop_exec(arguments)}",
            f"Icon={APP_ID}",
            "Terminal=false",
            "Categories=System;Monitor;",
        ]
        if autostart:
            lines += ["X-GNOME-Autostart-enabled=true", "NoDisplay=true"]
        else:
            lines += ["StartupNotify=false", "Keywords=log;logs;monitor;ship;"]
        lines.append(f"{MARKER_KEY}={MARKER_VALUE}")
        return "\n".join(lines) + "\n"

    def enable(self) -> AutostartReport:
        data_dir = f" ({self._run.data_dir})" if self._run.suffix else ""
        _write_ours(
            self.autostart_file,
            self._entry(
                f"Log monitor{data_dir}",
                "Ship log files to the log server from login on",
                self._run.arguments("--windows", "0"),
                autostart=True,
            ),
        )
        _write_ours(
            self.launcher_file,
            self._entry(
                f"Log monitor{data_dir}",
                "Follow log files and ship every line to a log server",
                self._run.arguments(),
                autostart=False,
            ),
        )
        try:
            self.icon_file.parent.mkdir(parents=True, exist_ok=True)
            self.icon_file.write_bytes(APP_ICON_FILE.read_bytes())
        except OSError as exc:
            raise AutostartError(f"cannot write {self.icon_file}: {exc.strerror or exc}.") from None
        return self.status()

    def disable(self) -> AutostartReport:
        notes = [
            note
            for path in (self.autostart_file, self.launcher_file)
            if (note := _remove_ours(path)) is not None
        ]
        # The icon is shared by every data dir's launcher: it goes with the last of them.
        applications = self.launcher_file.parent
        others = list(applications.glob(f"{APP_ID}*.desktop")) if applications.is_dir() else []
        if not any(_is_ours(path) for path in others) and self.icon_file.exists():
            try:
                self.icon_file.unlink()
            except OSError as exc:
                notes.append(f"cannot remove {self.icon_file}: {exc.strerror or exc}.")
        return AutostartReport(**{**_fields(self.status()), "notes": tuple(notes)})

    def status(self) -> AutostartReport:
        written = [str(p) for p in (self.autostart_file, self.launcher_file) if _is_ours(p)]
        return AutostartReport(
            enabled=_is_ours(self.autostart_file),
            launcher=_is_ours(self.launcher_file),
            written=tuple(written),
        )


def _fields(report: AutostartReport) -> dict[str, Any]:
    return {
        "enabled": report.enabled,
        "launcher": report.launcher,
        "written": report.written,
        "notes": report.notes,
    }


def _is_ours(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return f"\n{MARKER_KEY}={MARKER_VALUE}\n" in f"\n{text}"


def _write_ours(path: Path, text: str) -> None:
    if path.exists() and not _is_ours(path):
        raise AutostartError(
            f"{path} exists and was not written by log-monitor; move it away to continue."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Readable by all, as a desktop entry is: the desktop reads it, it holds no secret.
        write_file_atomically(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        raise AutostartError(f"cannot write {path}: {exc.strerror or exc}.") from None


def _remove_ours(path: Path) -> str | None:
    """Remove ``path`` if ``on`` wrote it; a sentence when something is left alone."""
    if not path.exists():
        return None
    if not _is_ours(path):
        return f"{path} was not written by log-monitor and is left alone."
    try:
        path.unlink()
    except OSError as exc:
        raise AutostartError(f"cannot remove {path}: {exc.strerror or exc}.") from None
    return None


# ------------------------------------------------------------------------------ macOS


class LaunchAgentAutostart:
    """A LaunchAgent that runs the client at login (macOS); no launcher is written: an
    application bundle would be needed for the Launchpad, which a pip install is not."""

    def __init__(self, run: Invocation, home: Path) -> None:
        self._run = run
        self._label = f"{LAUNCH_AGENT_LABEL}{run.suffix}"
        self.plist_file = home / "Library" / "LaunchAgents" / f"{self._label}.plist"

    def _ours(self) -> bool:
        try:
            with self.plist_file.open("rb") as file:
                content = plistlib.load(file)
        except (OSError, plistlib.InvalidFileException, ValueError):
            return False
        return isinstance(content, dict) and content.get(MARKER_KEY) == MARKER_VALUE

    def enable(self) -> AutostartReport:
        if self.plist_file.exists() and not self._ours():
            raise AutostartError(
                f"{self.plist_file} exists and was not written by log-monitor; move it away."
            )
        content = {
            "Label": self._label,
            "ProgramArguments": self._run.arguments("--windows", "0"),
            "RunAtLoad": True,
            "ProcessType": "Interactive",
            MARKER_KEY: MARKER_VALUE,
        }
        try:
            self.plist_file.parent.mkdir(parents=True, exist_ok=True)
            with self.plist_file.open("wb") as file:
                plistlib.dump(content, file)
        except OSError as exc:
            raise AutostartError(
                f"cannot write {self.plist_file}: {exc.strerror or exc}."
            ) from None
        return self.status()

    def disable(self) -> AutostartReport:
        notes: list[str] = []
        if self.plist_file.exists():
            if self._ours():
                try:
                    self.plist_file.unlink()
                except OSError as exc:
                    raise AutostartError(
                        f"cannot remove {self.plist_file}: {exc.strerror or exc}."
                    ) from None
            else:
                notes.append(f"{self.plist_file} was not written by log-monitor; left alone.")
        return AutostartReport(**{**_fields(self.status()), "notes": tuple(notes)})

    def status(self) -> AutostartReport:
        ours = self._ours()
        return AutostartReport(
            enabled=ours,
            launcher=False,
            written=(str(self.plist_file),) if ours else (),
            notes=("macOS: no launcher is written (it would need an application bundle).",),
        )


# ---------------------------------------------------------------------------- Windows


class RegistryKey(Protocol):
    """The part of ``winreg`` used here (a stand-in replaces it in tests off Windows)."""

    HKEY_CURRENT_USER: int
    KEY_READ: int
    KEY_SET_VALUE: int
    REG_SZ: int

    def OpenKey(self, key: int, sub_key: str, reserved: int, access: int) -> Any: ...
    def CreateKey(self, key: int, sub_key: str) -> Any: ...
    def QueryValueEx(self, key: Any, name: str) -> tuple[Any, int]: ...
    def SetValueEx(self, key: Any, name: str, reserved: int, kind: int, value: str) -> None: ...
    def DeleteValue(self, key: Any, name: str) -> None: ...
    def CloseKey(self, key: Any) -> None: ...


def windows_command_line(arguments: Sequence[str]) -> str:
    """One command line as Windows parses it (``subprocess.list2cmdline``'s rules)."""
    import subprocess

    return subprocess.list2cmdline(list(arguments))


class RunKeyAutostart:
    """The ``HKCU\\…\\Run`` value (Windows); no Start-menu shortcut is written (a ``.lnk``
    needs COM)."""

    def __init__(self, run: Invocation, registry: RegistryKey) -> None:
        self._run = run
        self._registry = registry
        self.value_name = f"{APP_ID}{run.suffix}"

    def _command(self) -> str:
        return windows_command_line(self._run.arguments("--windows", "0"))

    def _current(self) -> str | None:
        registry = self._registry
        try:
            key = registry.OpenKey(registry.HKEY_CURRENT_USER, RUN_KEY, 0, registry.KEY_READ)
        except OSError:
            return None
        try:
            value, _ = registry.QueryValueEx(key, self.value_name)
        except OSError:
            return None
        finally:
            registry.CloseKey(key)
        return value if isinstance(value, str) else None

    def _ours(self, value: str | None) -> bool:
        # Ours: a command of this shape (any interpreter path, any data dir of ours).
        return value is not None and " -m main_process run --windows 0" in value

    def enable(self) -> AutostartReport:
        current = self._current()
        if current is not None and not self._ours(current):
            raise AutostartError(
                f"the Run value {self.value_name} exists and was not written by log-monitor."
            )
        registry = self._registry
        try:
            key = registry.CreateKey(registry.HKEY_CURRENT_USER, RUN_KEY)
            try:
                registry.SetValueEx(key, self.value_name, 0, registry.REG_SZ, self._command())
            finally:
                registry.CloseKey(key)
        except OSError as exc:
            raise AutostartError(f"cannot write the Run value {self.value_name}: {exc}.") from None
        return self.status()

    def disable(self) -> AutostartReport:
        notes: list[str] = []
        current = self._current()
        if current is not None:
            if self._ours(current):
                registry = self._registry
                try:
                    key = registry.OpenKey(
                        registry.HKEY_CURRENT_USER, RUN_KEY, 0, registry.KEY_SET_VALUE
                    )
                    try:
                        registry.DeleteValue(key, self.value_name)
                    finally:
                        registry.CloseKey(key)
                except OSError as exc:
                    raise AutostartError(
                        f"cannot remove the Run value {self.value_name}: {exc}."
                    ) from None
            else:
                notes.append(f"the Run value {self.value_name} was not written by log-monitor.")
        return AutostartReport(**{**_fields(self.status()), "notes": tuple(notes)})

    def status(self) -> AutostartReport:
        ours = self._ours(self._current())
        return AutostartReport(
            enabled=ours,
            launcher=False,
            written=(rf"HKCU\{RUN_KEY}\{self.value_name}",) if ours else (),
            notes=("Windows: no Start-menu shortcut is written (a .lnk needs COM).",),
        )


# ---------------------------------------------------------------------------- choose


def autostart_for(
    run: Invocation,
    *,
    platform: str = sys.platform,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    registry: Callable[[], RegistryKey] | None = None,
) -> Autostart:
    """The autostart of this platform (the keyword arguments are for tests)."""
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    if platform == "win32":
        if registry is None:
            import winreg  # type: ignore[import-not-found, unused-ignore]

            module: Any = winreg  # the module has these functions; mypy checks it on Windows
            return RunKeyAutostart(run, module)  # pragma: no cover - Windows only
        return RunKeyAutostart(run, registry())
    if platform == "darwin":
        return LaunchAgentAutostart(run, home)
    return FreedesktopAutostart(run, environ, home)
