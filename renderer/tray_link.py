"""What a tray icon says to the main process, whichever toolkit draws the icon.

Owns, for the Qt tray (``renderer.tray``) and the pystray one (``renderer.tray_pystray``):

* ``TrayReporter``: the thread that sends the latest ``TrayState`` (``ReportTray``; the
  main process re-publishes it as the cached ``tray`` state, which ``log-monitor
  windows`` prints), again after a failure, and nothing twice;
* ``act_on_menu``: what a menu entry (or a click on the icon) does: Open window (raise
  an open window, or ask for one), Connect, Disconnect, Sign out, Quit (``Shutdown``:
  the main process stops cleanly, and the host with it), each on a thread of its own
  (``act_on_menu_soon``), never on the toolkit's.

Must not: import a GUI toolkit, or block its caller (sends happen on threads of their
own, but for ``send_now``, the host's last word as it ends).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ipc.messages import (
    Command,
    Connect,
    Disconnect,
    Failed,
    Logout,
    ReportTray,
    Shutdown,
    TrayState,
)
from renderer.commands import CommandSender
from renderer.tray_model import MENU_TEXT, MenuAction

log = logging.getLogger("renderer.tray")

REPORT_TIMEOUT_S = 2.0
REPORT_RETRY_S = 1.0
COMMAND_TIMEOUT_S = 5.0

MENU_COMMANDS: dict[MenuAction, Command] = {
    "connect": Connect(),
    "disconnect": Disconnect(),
    "logout": Logout(),
    "quit": Shutdown(),
}


class TrayReporter:
    """Sends the latest ``TrayState`` to the main process from a thread of its own,
    again after a failure, and nothing twice."""

    def __init__(self, sender: CommandSender) -> None:
        self._sender = sender
        self._wake = threading.Condition()
        self._latest: TrayState | None = None
        self._sent: TrayState | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tray-reporter", daemon=True)
        self._thread.start()

    def report(self, state: TrayState) -> None:
        with self._wake:
            self._latest = state
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def send_now(self, state: TrayState) -> None:
        """Send ``state`` on the caller's thread (the host's last word as it ends)."""
        self.stop()
        try:
            self._sender.send(ReportTray(state=state), REPORT_TIMEOUT_S)
        except Exception as exc:  # the main process may be gone
            log.info("could not report the tray: %s", exc)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (self._latest is None or self._latest == self._sent):
                    self._wake.wait()
                if self._stopping:
                    return
                state = self._latest
            assert state is not None
            try:
                reply = self._sender.send(ReportTray(state=state), REPORT_TIMEOUT_S)
            except Exception as exc:
                log.info("could not report the tray (%s); trying again", exc)
                with self._wake:
                    self._wake.wait(REPORT_RETRY_S)  # a pause before the retry
                continue
            if isinstance(reply, Failed):
                log.warning("the main process refused the tray's report: %s", reply.message)
            with self._wake:
                self._sent = state


def act_on_menu(
    action: MenuAction, sender: CommandSender, open_or_raise: Callable[[], None]
) -> None:
    """Do what the menu entry ``action`` says (blocks up to ``COMMAND_TIMEOUT_S``)."""
    try:
        if action == "open":
            open_or_raise()
            return
        reply = sender.send(MENU_COMMANDS[action], COMMAND_TIMEOUT_S)
    except Exception as exc:
        log.warning("tray: %s failed: %s", MENU_TEXT[action], exc)
        return
    if isinstance(reply, Failed):
        log.warning("tray: %s refused: %s", MENU_TEXT[action], reply.message)


def act_on_menu_soon(
    action: MenuAction, sender: CommandSender, open_or_raise: Callable[[], None]
) -> None:
    """``act_on_menu`` on a thread of its own (never the toolkit's)."""
    log.info("tray: %s", MENU_TEXT[action])
    threading.Thread(
        target=act_on_menu, args=(action, sender, open_or_raise), name="tray-action", daemon=True
    ).start()
