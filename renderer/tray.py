"""The renderer host's tray icon: Qt's ``QSystemTrayIcon``, driven by the status.

Owns ``TrayIcon``, made on the GUI thread once the host's Qt application exists
(``renderer.host.RendererHost``'s ``tray_maker``); it tells the main process what it shows
through a ``renderer.tray_link.TrayReporter``. Where the host runs no Qt (Windows), the
same model drives ``renderer.tray_pystray.PystrayTray`` instead.

* **Showing.** Qt puts the icon in an XEmbed tray on X11 (the ``_NET_SYSTEM_TRAY``
  selection: trayer, stalonetray, xfce4-panel, MATE's and LXQt's panels…) or a
  StatusNotifier host over D-Bus (KDE Plasma, GNOME with its AppIndicator extension, and
  on Wayland the only kind). A timer looks every second whether the desktop offers a
  tray (``QSystemTrayIcon.isSystemTrayAvailable``) and shows the icon when one appears,
  so a panel that starts after the host at login still gets it.
* **What it shows** follows the latest ``Status`` (``renderer.tray_model.tray_look``):
  picture, tooltip and menu. Statuses arrive on the subscription's thread; only the
  latest is applied, in one job for the GUI thread.
* **Acting.** The menu's entries and a click on the icon (Open window) do what
  ``renderer.tray_link.act_on_menu`` says, on a thread of their own (never on the GUI
  thread).
* **Notices.** ``notice(title, body)`` shows a ``TrayNotice`` as the tray's own message,
  what the main process does only when the desktop has no notification service.

Must not: block the GUI thread, or hold anything secret (a status holds none).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from ipc.messages import Published, Status, TrayState, WindowGeometry
from renderer.commands import CommandSender
from renderer.page import static_dir
from renderer.qt_capture import GuiThreadCall
from renderer.tray_link import TrayReporter, act_on_menu_soon
from renderer.tray_model import APP_ICON, MENU_TEXT, TRAY_STATES, MenuAction, TrayLook, tray_look

log = logging.getLogger(__name__)

CHECK_INTERVAL_MS = 1000
MESSAGE_SHOWN_MS = 10_000


class TrayIcon(QObject):
    """The tray icon of the host; see the module docstring. Made on the GUI thread."""

    def __init__(
        self,
        *,
        host_pid: int,
        sender: CommandSender,
        open_or_raise: Callable[[], None],
        reporter: TrayReporter,
    ) -> None:
        super().__init__()
        self._host_pid = host_pid
        self._sender = sender
        self._open_or_raise = open_or_raise
        self._reporter = reporter
        self._gui = GuiThreadCall()
        self._lock = threading.Lock()
        self._pending: Status | None = None
        self._apply_posted = False
        self._showing = False
        self._available = False
        self._messages = 0
        self._last_message: str | None = None
        self._look = tray_look(None)
        self._icons = {
            name: QIcon(str(static_dir() / f"{name}.svg"))
            for name in (APP_ICON, *(f"tray-{state}" for state in TRAY_STATES))
        }
        self._icon = QSystemTrayIcon(self._icons[APP_ICON], self)
        self._menu = QMenu()
        self._icon.setContextMenu(self._menu)
        self._icon.activated.connect(self._activated)
        self._apply(self._look)
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_INTERVAL_MS)
        self._timer.timeout.connect(self._check)
        self._timer.start()
        self._check()

    # ---- any thread ----------------------------------------------------------------------

    def update(self, message: Published) -> None:
        """A published message (the subscription's thread); statuses change the icon."""
        if not isinstance(message, Status):
            return
        with self._lock:
            self._pending = message
            if self._apply_posted:
                return
            self._apply_posted = True
        self._gui.post(self._apply_pending)

    def notice(self, title: str, body: str) -> None:
        """Show a notice as the tray's own message (any thread)."""
        self._gui.post(lambda: self._show_message(title, body))

    def showing(self) -> bool:
        return self._showing

    # ---- the GUI thread ------------------------------------------------------------------

    def close(self) -> None:
        self._timer.stop()
        self._icon.hide()
        self._showing = False
        self._reporter.send_now(TrayState(host=self._host_pid, closed=True))

    def _apply_pending(self) -> None:
        with self._lock:
            status, self._pending = self._pending, None
            self._apply_posted = False
        if status is not None:
            self._apply(tray_look(status))

    def _apply(self, look: TrayLook) -> None:
        previous, self._look = self._look, look
        if look.icon != previous.icon or self._icon.icon().isNull():
            self._icon.setIcon(self._icons.get(look.icon, self._icons[APP_ICON]))
        if look.tooltip != self._icon.toolTip():
            self._icon.setToolTip(look.tooltip)
        # Rebuilt only when its entries change: a menu open on the screen must not be
        # taken away under the pointer by a status that changed only a counter.
        if look.actions != previous.actions or self._menu.isEmpty():
            self._rebuild_menu(look)
        self._report()

    def _rebuild_menu(self, look: TrayLook) -> None:
        self._menu.clear()
        for action in look.actions:
            if action == "quit":
                self._menu.addSeparator()
            entry = QAction(MENU_TEXT[action], self._menu)
            entry.triggered.connect(lambda _checked=False, chosen=action: self._chosen(chosen))
            self._menu.addAction(entry)

    def _check(self) -> None:
        available = QSystemTrayIcon.isSystemTrayAvailable()
        if available and not self._available:
            log.info("the desktop offers a tray: showing the icon")
            self._icon.hide()  # a tray that came (back): embed the icon anew
            self._icon.show()
        elif not available and self._available:
            log.info("the desktop's tray went away")
        self._available = available
        showing = available and self._icon.isVisible()
        self._showing = showing
        self._report()

    def _show_message(self, title: str, body: str) -> None:
        if not self._showing:
            log.info("a notice with no tray to show it: %s", title)
            return
        self._icon.showMessage(
            title, body, self._icons.get(self._look.icon, self._icons[APP_ICON]), MESSAGE_SHOWN_MS
        )
        self._messages += 1
        self._last_message = title
        self._report()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (
            QSystemTrayIcon.ActivationReason.Trigger,
            QSystemTrayIcon.ActivationReason.DoubleClick,
            QSystemTrayIcon.ActivationReason.MiddleClick,
        ):
            self._chosen("open")

    def _chosen(self, action: MenuAction) -> None:
        act_on_menu_soon(action, self._sender, self._open_or_raise)

    def _report(self) -> None:
        geometry = None
        if self._showing:
            rect = self._icon.geometry()
            if rect.width() > 0:
                geometry = WindowGeometry(
                    x=rect.x(), y=rect.y(), width=rect.width(), height=rect.height()
                )
        self._reporter.report(
            TrayState(
                host=self._host_pid,
                available=self._available,
                shown=self._showing,
                state=self._look.state,
                icon=self._look.icon,
                tooltip=self._look.tooltip,
                menu=self._look.menu,
                messages=self._messages,
                last_message=self._last_message,
                geometry=geometry,
            )
        )
