"""A private desktop session for the tests of desktop services, from Debian's packages.

* ``KeyringSession(directory)`` starts ``dbus-daemon --session`` and ``gnome-keyring-daemon
  --unlock`` (a login keyring unlocked with a throwaway password, in a home of its own
  under ``directory``) and gives the environment a process needs to use them.
* ``DesktopSession(directory, tray=..., notifications=...)`` starts an X server (``Xvfb``),
  a session bus, and as asked a system tray (``trayer``, an XEmbed tray: what Qt's
  ``QSystemTrayIcon`` uses on X11 when no StatusNotifier watcher is on the bus) and a
  notification daemon (``dunst``, which owns ``org.freedesktop.Notifications`` and draws
  on the X server). It reads back what a person would see: the X window tree
  (``xwininfo``), pixels of the screen (``grab``, through Qt's xcb platform in a child
  process), the notifications dunst showed (``dunstctl``), and clicks and keys go in
  through ``xdotool`` (XTEST).

``stop`` ends everything by its pid. The bus starts nothing on demand. Nothing of the
user's own session is touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.waiting import wait_until
from tests.support.display_servers import start_xvfb

# A session bus with no service directories: nothing is started on demand (a call to the
# Secret Service while the test has stopped it must find it gone, not start a locked one).
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={directory}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class KeyringSession:
    def __init__(self, directory: Path) -> None:
        self.home = directory / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self._bus: subprocess.Popen[str] | None = None
        self._keyring: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> Self:
        self._bus, self.address = start_session_bus(self.home.parent)
        return self.start_keyring()

    def start_keyring(self) -> Self:
        """(Re)start the keyring daemon, unlocking the login keyring it keeps in ``home``."""
        keyrings = self.home / ".local" / "share" / "keyrings"
        keyrings.mkdir(parents=True, exist_ok=True)
        # The login keyring is the default collection, as on a desktop (gnome-keyring
        # keeps that alias in memory only, unless this file says it).
        (keyrings / "default").write_text("login")
        self._keyring = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.environment(os.environ),
        )
        assert self._keyring.stdin is not None
        self._keyring.stdin.write(b"throwaway keyring password")
        self._keyring.stdin.close()
        wait_until(self._secret_service_answers, 20, "the Secret Service on the session bus")
        return self

    def environment(self, base: dict[str, str] | os._Environ[str]) -> dict[str, str]:
        env = dict(base)
        env["DBUS_SESSION_BUS_ADDRESS"] = self.address
        env["HOME"] = str(self.home)
        env["XDG_DATA_HOME"] = str(self.home / ".local" / "share")
        # keyring picks its backend from the session, never from a config of the user's.
        env["XDG_CONFIG_HOME"] = str(self.home / ".config")
        env.pop("PYTHON_KEYRING_BACKEND", None)
        return env

    def _secret_service_answers(self) -> bool:
        probe = subprocess.run(
            [
                "dbus-send",
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ],
            env=self.environment(os.environ),
            capture_output=True,
            text=True,
            check=False,
        )
        return "boolean true" in probe.stdout

    def stop_keyring(self) -> None:
        """End the keyring daemon only (the keychain becomes unreachable)."""
        if self._keyring is not None and self._keyring.poll() is None:
            os.kill(self._keyring.pid, signal.SIGTERM)
            self._keyring.wait(10)
        self._keyring = None

    def stop(self) -> None:
        self.stop_keyring()
        if self._bus is not None and self._bus.poll() is None:
            os.kill(self._bus.pid, signal.SIGTERM)
            self._bus.wait(10)
        self._bus = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_session_bus(directory: Path) -> tuple[subprocess.Popen[str], str]:
    """``dbus-daemon`` with a session bus in ``directory`` (no service dirs); its address."""
    config = directory / "session-bus.conf"
    config.write_text(_BUS_CONFIG.format(directory=directory))
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()
    assert address, "dbus-daemon printed no address"
    return bus, address


# Qt's xcb platform in a child process: the pixels of a rectangle of the screen as a PNG.
_GRAB = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(["grab", "-platform", "xcb"])
x, y, w, h = (int(v) for v in sys.argv[2:6])
pixmap = app.primaryScreen().grabWindow(0, x, y, w, h)
if not pixmap.save(sys.argv[1], "PNG"):
    sys.exit("could not save " + sys.argv[1])
"""

TRAY_HEIGHT = 24


# trayer at the top right of the screen, a panel as high as a tray icon.
TRAYER_COMMAND = [
    "trayer",
    "--edge",
    "top",
    "--align",
    "right",
    "--widthtype",
    "request",
    "--height",
    str(TRAY_HEIGHT),
    "--transparent",
    "false",
    "--tint",
    "0xdddddd",
    "--SetDockType",
    "true",
]
# How many times trayer is started when it exits before its panel shows.
TRAY_STARTS = 3


class DesktopSession:
    """An X server with, as asked, a tray and a notification daemon on a private session
    bus; see the module docstring."""

    def __init__(self, directory: Path, *, tray: bool = True, notifications: bool = True) -> None:
        self.directory = directory
        self.home = directory / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.want_tray = tray
        self.want_notifications = notifications
        self._processes: list[subprocess.Popen[Any]] = []
        self._xvfb: Any = None
        self.display = ""
        self.bus_address = ""

    def start(self) -> Self:
        # A start that fails half way stops what it started: ``__exit__`` never runs
        # then, and a leaked X server would take a display number from later sessions.
        try:
            self._xvfb = start_xvfb(self.directory / "xvfb.log")
            self.display = str(self._xvfb.env["DISPLAY"])
            bus, self.bus_address = start_session_bus(self.directory)
            self._processes.append(bus)
            if self.want_tray:
                self.start_tray()
            if self.want_notifications:
                self.start_notifications()
        except BaseException:
            self.stop()
            raise
        return self

    def environment(self, base: dict[str, str] | os._Environ[str]) -> dict[str, str]:
        env = dict(base)
        for name in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
            env.pop(name, None)
        env["DISPLAY"] = self.display
        env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        env["XDG_CONFIG_HOME"] = str(self.home / ".config")
        return env

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.directory / log_name, "ab") as log:
            process = subprocess.Popen(
                command,
                env=self.environment(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._processes.append(process)
        return process

    # ---- the tray ----------------------------------------------------------------------

    def start_tray(self) -> None:
        """trayer at the top right of the screen, a panel as high as a tray icon.

        Started again when it exits before its panel shows: on a busy machine trayer
        1.1.8 now and then exits 1 at start (twice in about 30 starts in a day's reruns
        here, once saying it cannot open the display that Xvfb had just reported ready),
        and a second start works; three such exits in a row fail the session."""
        for attempt in range(1, TRAY_STARTS + 1):
            trayer = self._spawn(TRAYER_COMMAND, "trayer.log")

            def panel_shown(trayer: subprocess.Popen[bytes] = trayer) -> bool:
                return trayer.poll() is not None or self.tray_panel() is not None

            wait_until(panel_shown, 30, "trayer's panel on the X server", interval=0.1)
            if trayer.poll() is None:
                return
            if attempt == TRAY_STARTS:
                log = (self.directory / "trayer.log").read_text(errors="replace")
                raise RuntimeError(
                    f"trayer exited with {trayer.returncode} at each of {TRAY_STARTS} "
                    f"starts: {log[-2000:]}"
                )

    def window_tree(self) -> str:
        return subprocess.run(
            ["xwininfo", "-root", "-tree"],
            env=self.environment(os.environ),
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout

    def tray_panel(self) -> str | None:
        """The part of the X window tree under trayer's panel (None: no panel)."""
        lines = self.window_tree().splitlines()
        for index, line in enumerate(lines):
            if '("panel" "trayer")' in line:
                depth = len(line) - len(line.lstrip())
                below = [line]
                for child in lines[index + 1 :]:
                    if child.strip() and len(child) - len(child.lstrip()) <= depth:
                        break
                    below.append(child)
                return "\n".join(below)
        return None

    def top_level_windows(self) -> list[str]:
        """The X window tree's top-level lines (the root's direct children)."""
        lines = self.window_tree().splitlines()
        depths = [len(line) - len(line.lstrip()) for line in lines if line.strip().startswith("0x")]
        if not depths:
            return []
        top = min(depths)
        return [
            line.strip()
            for line in lines
            if line.strip().startswith("0x") and len(line) - len(line.lstrip()) == top
        ]

    # ---- the notification daemon ------------------------------------------------------

    def start_notifications(self) -> None:
        self._spawn(["dunst"], "dunst.log")
        wait_until(
            lambda: self._name_has_owner("org.freedesktop.Notifications"),
            20,
            "dunst on the session bus",
        )

    def _name_has_owner(self, name: str) -> bool:
        probe = subprocess.run(
            [
                "dbus-send",
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                f"string:{name}",
            ],
            env=self.environment(os.environ),
            capture_output=True,
            text=True,
            check=False,
        )
        return "boolean true" in probe.stdout

    def dunstctl(self, *args: str) -> str:
        return subprocess.run(
            ["dunstctl", *args],
            env=self.environment(os.environ),
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout

    def notifications_seen(self) -> int:
        """How many notifications dunst has shown: on the screen now, or in its history."""
        counts = {}
        for line in self.dunstctl("count").splitlines():
            name, _, value = line.partition(":")
            counts[name.strip()] = int(value)
        return counts.get("Currently displayed", 0) + counts.get("History", 0)

    def notification_history(self) -> list[dict[str, str]]:
        """Every notification dunst has shown (closing those still on the screen first):
        ``appname``, ``summary`` and ``body`` of each, oldest first."""
        self.dunstctl("close-all")
        data = json.loads(self.dunstctl("history"))
        shown = []
        for item in data["data"][0]:
            shown.append({key: str(item[key]["data"]) for key in ("appname", "summary", "body")})
        shown.reverse()  # dunst lists the newest first
        return shown

    # ---- input and pixels -------------------------------------------------------------

    def xdotool(self, *args: str) -> None:
        subprocess.run(
            ["xdotool", *args],
            env=self.environment(os.environ),
            capture_output=True,
            timeout=20,
            check=True,
        )

    def grab(self, path: Path, x: int, y: int, width: int, height: int) -> bytes:
        """A PNG of that rectangle of the screen, as it is now."""
        subprocess.run(
            [sys.executable, "-c", _GRAB, str(path), str(x), str(y), str(width), str(height)],
            env=self.environment(os.environ),
            capture_output=True,
            timeout=60,
            check=True,
        )
        return path.read_bytes()

    # ---- the end ----------------------------------------------------------------------

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(10)
        self._processes.clear()
        if self._xvfb is not None:
            self._xvfb.stop()
            self._xvfb = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
