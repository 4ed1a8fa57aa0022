"""A private desktop session for the tests of desktop services: a D-Bus session bus and,
on it, GNOME Keyring's Secret Service (Debian's ``dbus`` and ``gnome-keyring``).

``KeyringSession(directory)`` starts ``dbus-daemon --session`` and ``gnome-keyring-daemon
--unlock`` (a login keyring unlocked with a throwaway password, in a home of its own under
``directory``) and gives the environment a process needs to use them; ``stop`` ends both
by their pids. The bus starts nothing on demand. Nothing of the user's own session is
touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.server_process import wait_for

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
        config = self.home.parent / "session-bus.conf"
        config.write_text(_BUS_CONFIG.format(directory=self.home.parent))
        self._bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._bus.stdout is not None
        self.address = self._bus.stdout.readline().strip()
        assert self.address, "dbus-daemon printed no address"
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
        wait_for(self._secret_service_answers, 20, "the Secret Service on the session bus")
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
