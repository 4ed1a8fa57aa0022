"""The tray's decisions without Qt or a desktop: what the icon shows for a status, and what
the main process does when a host with a tray (or looking for one) ends.

``renderer.tray_model.tray_look`` is plain data. ``WindowHost.reap`` is driven with a
stand-in for the host's process (its exit status is what is decided on) and a ``_start``
that records instead of spawning.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ipc.host_launch import EXIT_MAIN_PROCESS_GONE, EXIT_NOTHING_TO_SHOW
from ipc.messages import Published, Status, TrayState
from main_process import windows
from main_process.windows import (
    WindowHost,
    _Host,
)
from renderer.page import static_dir
from renderer.tray_model import tray_look

SERVER = "http://127.0.0.1:5324"


def status(**fields: Any) -> Status:
    base: dict[str, Any] = {"state": "connected", "server": SERVER, "identity": "guest"}
    base.update(fields)
    return Status(**base)


def menu(look: Any) -> list[str]:
    return [item.text for item in look.menu]


def test_each_state_has_its_own_picture_and_the_menu_fits_it() -> None:
    pictures = {}
    for state in ("connected", "connecting", "disconnected", "error"):
        look = tray_look(status(state=state))
        pictures[state] = look.icon
        assert look.state == state
        assert (static_dir() / f"{look.icon}.svg").is_file()
    assert len(set(pictures.values())) == 4
    assert menu(tray_look(status(state="connected"))) == ["Open window", "Disconnect", "Quit"]
    assert menu(tray_look(status(state="connecting"))) == ["Open window", "Disconnect", "Quit"]
    # Waiting to retry: still trying, so Disconnect; stopped or failed: Connect.
    retrying = status(state="disconnected", attempt=3, next_retry_ms=4000)
    assert menu(tray_look(retrying)) == ["Open window", "Disconnect", "Quit"]
    assert menu(tray_look(status(state="disconnected"))) == ["Open window", "Connect", "Quit"]
    assert menu(tray_look(status(state="error"))) == ["Open window", "Connect", "Quit"]
    assert tray_look(None).icon == "icon"
    assert menu(tray_look(None)) == ["Open window", "Quit"]


def test_sign_out_only_while_signed_in_and_the_tooltip_says_who_and_what_waits() -> None:
    alice = status(authenticated=True, identity="user", username="alice", buffered_chunks=1234)
    look = tray_look(alice)
    assert menu(look) == ["Open window", "Disconnect", "Sign out", "Quit"]
    assert look.tooltip.splitlines() == [
        "Log monitor: connected",
        f"Server: {SERVER}",
        "Signed in as alice",
        "1,234 chunks waiting",
    ]
    # A user name the server sent over a guest connection does not make a sign-in.
    spoofed = status(authenticated=True, identity="guest", username="alice", paused=True)
    look = tray_look(spoofed)
    assert "Sign out" not in menu(look)
    assert look.tooltip.splitlines()[2:] == [
        "As a guest",
        "Nothing waiting to be sent",
        "Reading paused: the local buffer is full",
    ]
    retrying = tray_look(status(state="disconnected", attempt=7, next_retry_ms=900))
    assert retrying.tooltip.splitlines()[0] == "Log monitor: not connected (retrying, attempt 7)"


# ---- the main process's side -----------------------------------------------------------------


class EndedProcess:
    """Stands in for a renderer host's ``Popen`` that has ended with ``code``."""

    def __init__(self, pid: int, code: int | None) -> None:
        self.pid = pid
        self.code = code

    def poll(self) -> int | None:
        return self.code


def host_with(
    monkeypatch: pytest.MonkeyPatch, code: int, *, initial: int, tray: TrayState | None
) -> tuple[WindowHost, list[int], list[Published]]:
    published: list[Published] = []
    started: list[int] = []
    host = WindowHost(Path("/nonexistent"), on_change=lambda: None, publish=published.append)

    def start(count: int, geometries: list[Any]) -> int:
        started.append(count)
        return 4242

    monkeypatch.setattr(host, "_start", start)
    process: Any = EndedProcess(1234, code)
    record = _Host(process, initial=initial)
    record.reader_done = threading.Event()
    record.reader_done.set()
    host._host = record
    if tray is not None:
        host.on_tray(tray)
    return host, started, published


def test_nothing_to_show_is_no_failure_and_not_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    looked = TrayState(host=1234, available=False, shown=False)
    host, started, _ = host_with(monkeypatch, EXIT_NOTHING_TO_SHOW, initial=0, tray=looked)
    ended = host.reap()
    assert ended is not None
    assert ended.start_failure is None
    assert ended.gave_up is None
    assert ended.restarted is None
    assert ended.had_tray is True
    assert started == []
    assert host.host_pid is None
    assert host.tray is None


def test_a_host_that_only_looked_for_a_tray_and_failed_is_a_log_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, started, _ = host_with(monkeypatch, -6, initial=0, tray=None)
    ended = host.reap()
    assert ended is not None
    assert ended.start_failure is None  # nobody asked to see anything
    assert started == []
    # The same failure with a window asked for is the person's sentence.
    host, started, _ = host_with(monkeypatch, -6, initial=1, tray=None)
    ended = host.reap()
    assert ended is not None
    assert ended.start_failure is not None
    assert ended.start_failure.startswith("Windows cannot open: ")


def test_a_killed_host_with_a_tray_comes_back_with_its_tray(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown = TrayState(host=1234, available=True, shown=True, state="connected")
    host, started, _ = host_with(monkeypatch, -9, initial=0, tray=shown)
    ended = host.reap()
    assert ended is not None
    assert ended.restarted == 4242
    assert started == [0]  # the tray alone, as before
    # A host that believed the main process gone is not started again, tray or not.
    host, started, _ = host_with(monkeypatch, EXIT_MAIN_PROCESS_GONE, initial=0, tray=shown)
    ended = host.reap()
    assert ended is not None
    assert ended.restarted is None
    assert started == []


def test_the_tray_alone_is_looked_for_only_where_it_could_appear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = [
        ("linux", {"DISPLAY": ":0"}, True),
        ("linux", {"WAYLAND_DISPLAY": "wayland-0"}, True),
        ("linux", {"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, False),
        ("linux", {}, False),
        # Windows and macOS: pystray's icon in the notification area or the menu bar,
        # which are always there.
        ("win32", {}, True),
        ("darwin", {}, True),
        # pystray asked for on Linux still needs a display, but not Qt's platform.
        ("linux", {"LOG_MONITOR_TRAY": "pystray", "DISPLAY": ":0"}, True),
        ("linux", {"LOG_MONITOR_TRAY": "pystray"}, False),
    ]
    for platform, environ, expected in cases:
        monkeypatch.setattr(sys, "platform", platform)
        for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "LOG_MONITOR_TRAY"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        assert windows.can_show_tray() is expected, (platform, environ)
