"""The tray as the system tests see it: ``TrayWatch`` (every ``TrayState`` the main process
publishes), ``TrayMain`` (``log-monitor run --windows 0`` on a desktop session with a watch
on its tray), the environment that puts a main process on that desktop (``desktop_env``),
and the conditions on what the tray shows (``shown``, ``embedded_at``)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipc.host import connect_subscriber_thread
from ipc.messages import TOPIC_TRAY, TrayState, WindowGeometry
from ipc.subscriber import Delivery, SubscriberThread
from tests.support.desktop_session import DesktopSession
from tests.support.live_main import LiveMain


@dataclass
class TrayWatch:
    """Every ``TrayState`` the main process publishes, as it arrives."""

    states: list[TrayState] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    subscriber: SubscriberThread | None = None

    def on_delivery(self, delivery: Delivery) -> None:
        if isinstance(delivery.message, TrayState):
            with self.changed:
                self.states.append(delivery.message)
                self.changed.notify_all()

    def wait(self, predicate: Callable[[TrayState], bool], timeout: float, what: str) -> TrayState:
        with self.changed:
            if not self.changed.wait_for(
                lambda: bool(self.states) and predicate(self.states[-1]), timeout
            ):
                last = self.states[-1] if self.states else None
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; last: {last}"
                )
            return self.states[-1]


def desktop_env(desktop: DesktopSession) -> dict[str, str | None]:
    """The environment variables that put a main process and its windows on ``desktop``."""
    return {
        "DISPLAY": desktop.display,
        "DBUS_SESSION_BUS_ADDRESS": desktop.bus_address,
        "XDG_CONFIG_HOME": str(desktop.home / ".config"),
        "QT_QPA_PLATFORM": None,
        "WAYLAND_DISPLAY": None,
    }


class TrayMain:
    """``log-monitor run --windows 0`` on the desktop, with a watch on its tray."""

    def __init__(
        self,
        data_dir: Path,
        desktop: DesktopSession,
        server: str,
        *extra: str,
        environment: Mapping[str, str | None] | None = None,
    ) -> None:
        # ``environment``: more variables for the main process (and so its host).
        display: dict[str, str | None] = {**desktop_env(desktop), **(environment or {})}
        self.main = LiveMain(data_dir, 0, server, display=display, extra=extra)
        self.tray = TrayWatch()
        self.tray.subscriber = connect_subscriber_thread(
            data_dir, self.tray.on_delivery, (TOPIC_TRAY,)
        ).start()

    def windows_json(self) -> dict[str, Any]:
        result = self.main.command("windows", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert isinstance(report, dict)
        return report

    def close(self) -> None:
        if self.tray.subscriber is not None:
            self.tray.subscriber.stop()
        self.main.host_pids.update(s.host for s in self.tray.states)
        self.main.close()


def shown(state: str) -> Callable[[TrayState], bool]:
    """The condition that the tray's icon is shown and shows ``state``."""
    return lambda tray: tray.shown and tray.state == state


def embedded_at(desktop: DesktopSession) -> WindowGeometry:
    """Where the X server has the one "Log monitor" window inside trayer's panel (its
    size, and its place on the screen)."""
    panel = desktop.tray_panel()
    assert panel is not None, "no tray panel"
    embedded = [line for line in panel.splitlines() if '"Log monitor"' in line]
    assert len(embedded) == 1, panel
    found = re.search(r"(\d+)x(\d+)[+-]\d+[+-]\d+\s+\+(-?\d+)\+(-?\d+)", embedded[0])
    assert found is not None, embedded[0]
    width, height, x, y = (int(group) for group in found.groups())
    return WindowGeometry(x=x, y=y, width=width, height=height)
