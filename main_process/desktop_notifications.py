"""Delivering a ``Notification`` to the person at the desktop.

Owns ``DesktopNotifier``: the main process hands it what ``notifications.NotificationPolicy``
decided, and it delivers each one, in order, without ever holding up the main loop:

1. through the desktop's notification service, ``org.freedesktop.Notifications`` on the
   D-Bus session bus (Linux and the BSDs: GNOME Shell, KDE Plasma, dunst, mako, xfce4-
   notifyd…), with jeepney (pure Python, already there as keyring's Secret Service
   client). The call is bounded by ``CALL_TIMEOUT_S``; the bus may start the service on
   demand, as a desktop's does;
2. where there is no such service (no session bus, or nothing owns the name; always on
   Windows and macOS), as the tray icon's own message when the renderer host reports a
   tray shown: ``fallback`` publishes a ``TrayNotice`` for it (Qt's
   ``QSystemTrayIcon.showMessage`` on Linux, pystray's ``Icon.notify`` on Windows: a
   balloon, or a toast from Windows 10 on; on macOS an ``osascript`` notification);
3. else only the log line, which every notification gets anyway.

Why the main process delivers, not the renderer host: a notification matters most when
nothing else is on the screen, no window and perhaps no host at all (a desktop without a
tray runs none); the main process is the one process that is always there. The host is
used only for the tray's own messages, which only it can show.

Windows and macOS have no such bus: there the tray's messages (a host with a tray runs
there whenever the main process runs with a tray; on macOS pystray's message is an
``osascript`` ``display notification``), else only the log. Never a secret in a notification: the policy writes only the
server's address, a user name and counts.

Must not: block the event loop (D-Bus is spoken asynchronously, each notification in a
task of its own, one at a time), or raise into its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from main_process.notifications import Notification
from main_process.paths import APP_ICON_FILE

log = logging.getLogger("log_monitor.notifications")

CALL_TIMEOUT_S = 5.0
# How many delivered notifications are remembered (how, what), for diagnostics and tests:
# a main process runs for weeks, so not all of them.
DELIVERED_KEPT = 64
APP_NAME = "Log monitor"
DESKTOP_ENTRY = "log-monitor"
_URGENCY = {"normal": 1, "critical": 2}

# What a notification can fall back to: show it as the tray's own message; True when a
# tray took it.
TrayFallback = Callable[[Notification], bool]


def icon_path() -> Path:
    """The app's SVG icon shipped in the package (the notification's picture)."""
    return APP_ICON_FILE


class NoNotificationService(Exception):
    """The session has no ``org.freedesktop.Notifications`` (or no session bus)."""


async def notify_over_dbus(notification: Notification, timeout: float = CALL_TIMEOUT_S) -> int:
    """Show ``notification`` through ``org.freedesktop.Notifications``; its id there."""
    if sys.platform in ("win32", "darwin") or not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        raise NoNotificationService("no D-Bus session bus")
    try:  # keyring's own D-Bus client on Linux (through SecretStorage)
        from jeepney import (  # type: ignore[import-untyped]
            DBusAddress,
            HeaderFields,
            MessageType,
            new_method_call,
        )
        from jeepney.io.asyncio import open_dbus_router  # type: ignore[import-untyped]
    except ImportError:
        raise NoNotificationService("jeepney is not installed") from None

    address = DBusAddress(
        "/org/freedesktop/Notifications",
        bus_name="org.freedesktop.Notifications",
        interface="org.freedesktop.Notifications",
    )
    hints = {
        "urgency": ("y", _URGENCY[notification.urgency]),
        "desktop-entry": ("s", DESKTOP_ENTRY),
        "category": ("s", "network" if notification.kind == "unreachable" else "transfer"),
    }
    call = new_method_call(
        address,
        "Notify",
        "susssasa{sv}i",
        (APP_NAME, 0, str(icon_path()), notification.title, notification.body, [], hints, -1),
    )
    try:
        async with asyncio.timeout(timeout):
            async with open_dbus_router(bus="SESSION") as router:
                reply = await router.send_and_get_reply(call)
    except (OSError, ValueError, KeyError) as exc:
        # No bus at the address (OSError), or an address jeepney cannot use.
        raise NoNotificationService(f"the session bus cannot be reached ({exc})") from None
    if reply.header.message_type == MessageType.error:
        name = str(reply.header.fields.get(HeaderFields.error_name, "an error"))
        raise NoNotificationService(f"the notification service answered {name}")
    (notification_id,) = reply.body
    return int(notification_id)


class DesktopNotifier:
    """Delivers notifications one at a time, in order; see the module docstring."""

    def __init__(
        self,
        tray_fallback: TrayFallback,
        notify: Callable[[Notification], Awaitable[int]] = notify_over_dbus,
    ) -> None:
        self._tray_fallback = tray_fallback
        self._notify = notify
        self._queue: asyncio.Queue[Notification] | None = None
        self._task: asyncio.Task[None] | None = None
        self.delivered: deque[tuple[str, Notification]] = deque(maxlen=DELIVERED_KEPT)

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._deliver_each(), name="notifications")

    def submit(self, notification: Notification) -> None:
        """Deliver ``notification`` soon (from the event loop's thread)."""
        log.warning("notification: %s: %s", notification.title, notification.body)
        if self._queue is not None:
            self._queue.put_nowait(notification)

    async def _deliver_each(self) -> None:
        assert self._queue is not None
        while True:
            notification = await self._queue.get()
            try:
                self.delivered.append((await self._deliver(notification), notification))
            except Exception:
                log.exception("delivering a notification failed")
            finally:
                self._queue.task_done()

    async def idle(self) -> None:
        """Return once every notification submitted so far has been delivered."""
        if self._queue is not None:
            await self._queue.join()

    async def _deliver(self, notification: Notification) -> str:
        try:
            await self._notify(notification)
        except (NoNotificationService, TimeoutError) as exc:
            if self._tray_fallback(notification):
                log.info("no notification service (%s); shown by the tray", exc)
                return "tray"
            log.info("no notification service (%s) and no tray; logged only", exc)
            return "log"
        return "dbus"

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
