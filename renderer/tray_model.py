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

* **The toolkit** (``ipc.host_launch.tray_toolkit``, there because the main process
  asks it too): Qt's ``QSystemTrayIcon`` where the host runs Qt
  (Linux); pystray on Windows, where the host runs pywebview's native engine
  (WinForms/WebView2) and pystray's win32 backend keeps its own message loop on a thread
  of its own; pystray on macOS too, where its darwin backend makes and changes its
  ``NSStatusItem`` on whichever thread calls it while AppKit allows that only on the main
  thread, which pywebview's Cocoa loop owns: there every such call is handed to that
  loop (``renderer.tray_pystray``'s main-thread poster).
  ``LOG_MONITOR_TRAY=pystray`` asks for pystray anywhere (a diagnostic: the tests run
  it on Linux, under an XEmbed tray).
* **The pystray menu** (``menu_entries``): the same entries, Open window its default
  (what a click on the icon does), a separator before Quit; and its tooltip
  (``short_tooltip``): Windows keeps at most 127 characters of a tray icon's tip, so the
  lines that do not fit are left out, from the last (a line cut short only if the first
  alone is too long); a notice's title and text likewise (``short_notice``: 63 and 255
  characters, Windows' limits for a notification balloon).

Must not: import Qt or pystray, or show anything secret (a status holds none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from ipc.messages import Status, TrayMenuItem

MenuAction: TypeAlias = Literal["open", "connect", "disconnect", "logout", "quit"]

APP_ICON = "icon"
TRAY_STATES = ("connected", "connecting", "disconnected", "error")
# Every picture the tray shows: ``static/<name>.svg``, and ``static/<name>.png`` drawn from
# it for pystray, which takes bitmaps (``scripts/render_tray_pictures.py``).
TRAY_PICTURES = (APP_ICON, *(f"tray-{state}" for state in TRAY_STATES))
# The most characters Windows shows in a tray icon's tooltip (NOTIFYICONDATA's szTip has
# 128, with the terminating NUL).
TOOLTIP_LIMIT = 127
# ... and in a notification balloon's title and text (szInfoTitle, szInfo).
NOTICE_TITLE_LIMIT = 63
NOTICE_BODY_LIMIT = 255
# The PNGs' size: Windows asks for 16 to 32 pixels in its tray (up to 64 at 200 %), and
# scales down from a larger bitmap better than up.
PICTURE_SIZE = 64
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


@dataclass(frozen=True, slots=True)
class MenuEntry:
    """One entry of the pystray menu: its text, what it does, whether it is the default
    (what a click on the icon does) and whether a separator comes before it."""

    text: str
    action: MenuAction
    default: bool
    separated: bool


def menu_entries(look: TrayLook) -> tuple[MenuEntry, ...]:
    """The entries of ``look``'s menu, as pystray shows them."""
    return tuple(
        MenuEntry(MENU_TEXT[action], action, action == "open", action == "quit")
        for action in look.actions
    )


def short_tooltip(tooltip: str, limit: int = TOOLTIP_LIMIT) -> str:
    """``tooltip`` in at most ``limit`` characters: whole lines, the last ones left out."""
    if len(tooltip) <= limit:
        return tooltip
    kept: list[str] = []
    for line in tooltip.splitlines():
        if len("\n".join([*kept, line])) > limit:
            break
        kept.append(line)
    if not kept:
        return _cut(tooltip, limit)
    return "\n".join(kept)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_notice(title: str, body: str) -> tuple[str, str]:
    """A notice's title and text in what a Windows notification balloon holds."""
    return _cut(title, NOTICE_TITLE_LIMIT), _cut(body, NOTICE_BODY_LIMIT)
