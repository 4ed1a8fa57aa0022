"""What the tray icon shows for a status: picture, tooltip and menu, without Qt.

Owns ``tray_look(status)``: the decisions behind ``renderer.tray.TrayIcon``, kept free of
Qt so they are unit-tested as plain data.

* **The picture** is the app's document glyph with a badge told apart by its shape, not
  only its colour (``static/tray-<state>.svg``): a check in a disc (connected), three
  dots in a disc (connecting), a ring with a slash (not connected), a triangle with an
  exclamation mark (connection failed). Before the first status it is the app icon.
* **The tooltip** says the state, the server, who the server knows us as and how many
  chunks wait; no countdown (it would change every second and say little).
* **The menu**: Open window; Connect or Disconnect (Disconnect while connected, trying
  to, or waiting to retry; Connect once stopped or failed); Sign out, only while a user
  is signed in; Quit (a clean stop of the main process, as ``log-monitor stop``).

Must not: import Qt, or show anything secret (a status holds none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from ipc.messages import Status, TrayMenuItem

MenuAction: TypeAlias = Literal["open", "connect", "disconnect", "logout", "quit"]

APP_ICON = "icon"
TRAY_STATES = ("connected", "connecting", "disconnected", "error")
STATE_WORDS = {
    "connected": "connected",
    "connecting": "connecting…",
    "disconnected": "not connected",
    "error": "connection failed",
}
MENU_TEXT: dict[MenuAction, str] = {
    "open": "Open window",
    "connect": "Connect",
    "disconnect": "Disconnect",
    "logout": "Sign out",
    "quit": "Quit",
}


@dataclass(frozen=True, slots=True)
class TrayLook:
    """The icon's picture (a file name in ``static/`` without ``.svg``), tooltip and menu."""

    state: str | None
    icon: str
    tooltip: str
    actions: tuple[MenuAction, ...]

    @property
    def menu(self) -> tuple[TrayMenuItem, ...]:
        return tuple(TrayMenuItem(text=MENU_TEXT[action]) for action in self.actions)


def _chunks_waiting(count: int) -> str:
    if count == 0:
        return "nothing waiting to be sent"
    return "1 chunk waiting" if count == 1 else f"{count:,} chunks waiting"


def tray_look(status: Status | None) -> TrayLook:
    """What the tray shows for ``status`` (None: no status yet)."""
    if status is None:
        return TrayLook(
            None, APP_ICON, "Log monitor: waiting for the main process", ("open", "quit")
        )
    state = status.state if status.state in TRAY_STATES else "error"
    signed_in = status.authenticated and status.identity == "user"
    if signed_in:
        who = f"signed in as {status.username or 'a user'}"
    elif status.identity == "guest":
        who = "as a guest"
    else:
        who = "not signed in"
    state_words = STATE_WORDS[state]
    if state == "disconnected" and status.next_retry_ms is not None:
        state_words += f" (retrying, attempt {status.attempt})"
    lines = [
        f"Log monitor: {state_words}",
        f"Server: {status.server or '-'}",
        who[0].upper() + who[1:],
        _chunks_waiting(status.buffered_chunks)[0].upper()
        + _chunks_waiting(status.buffered_chunks)[1:],
    ]
    if status.paused:
        lines.append("Reading paused: the local buffer is full")
    trying = state in ("connected", "connecting") or (
        state == "disconnected" and status.next_retry_ms is not None
    )
    actions: list[MenuAction] = ["open", "disconnect" if trying else "connect"]
    if signed_in:
        actions.append("logout")
    actions.append("quit")
    return TrayLook(state, f"tray-{state}", "\n".join(lines), tuple(actions))
