"""The pystray tray (``renderer.tray_pystray.PystrayTray``) without a desktop, on every
platform: what the Windows host's tray shows and does for each status.

The tray is driven by pystray's own ``Icon``, ``Menu`` and ``MenuItem`` logic (the menu's
default entry, the menu items' actions, the setters that update a shown icon) over a
stand-in backend (``RecordingIcon``) that records what a real backend (win32, X11) would
be asked to draw: Windows' own calls (``Shell_NotifyIcon``) are not made here. Commands go
to a stand-in ``CommandSender`` that records them, and the reports to the main process to
a recording ``TrayReporter`` stand-in. The real pystray tray on a real X11 tray, with a
real main process, is ``tests/system/test_tray_pystray.py``.

Also here: the platform decisions (which toolkit draws the tray where), the PNG pictures
shipped for pystray, and that on Windows a notification falls back to the tray's message.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from ipc.host_launch import tray_toolkit
from ipc.messages import (
    Command,
    Connect,
    Disconnect,
    Logout,
    Shutdown,
    Stats,
    Status,
)
from main_process.desktop_notifications import DesktopNotifier
from main_process.notifications import Notification
from renderer.page import static_dir
from renderer.tray_model import (
    NOTICE_BODY_LIMIT,
    NOTICE_TITLE_LIMIT,
    PICTURE_SIZE,
    TOOLTIP_LIMIT,
    TRAY_PICTURES,
    menu_entries,
    short_notice,
    short_tooltip,
    tray_look,
)
from tests.support.tray_recorders import (
    WAIT_S,
    Recorder,
    RecordingReporter,
    RecordingSender,
    last_report,
    state_is,
    status,
)


@pytest.fixture
def pystray_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """pystray, imported with its backend-less ``Icon`` (no display needed); the variable
    is set for this test only, so no process started later inherits it."""
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    import pystray

    return pystray


def recording_icon_class(
    pystray: Any, recorder: Recorder, notifications: bool, failing_shows: int = 0
) -> Any:
    """A pystray ``Icon`` whose backend records instead of drawing; its first
    ``failing_shows`` shows fail as X11's does when asked before its loop is ready."""
    failures = [failing_shows]

    class RecordingIcon(pystray.Icon):  # type: ignore[misc]
        HAS_NOTIFICATION = notifications

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._stopped = threading.Event()

        def _show(self) -> None:
            if failures[0]:
                failures[0] -= 1
                recorder.add("failed show", None)
                # What pystray 0.19.5's X11 backend raises then: no ``_thread`` yet.
                raise AttributeError("'Icon' object has no attribute '_thread'")
            recorder.add("show", None)

        def _hide(self) -> None:
            recorder.add("hide", None)

        def _update_icon(self) -> None:
            recorder.add("picture", self.icon)
            self._icon_valid = True

        def _update_title(self) -> None:
            recorder.add("title", self.title)

        def _update_menu(self) -> None:
            recorder.add("menu", [str(item) for item in self.menu] if self.menu else [])

        def _notify(self, message: str, title: str | None = None) -> None:
            recorder.add("notify", (title, message))

        def _run(self) -> None:
            self._mark_ready()
            self._stopped.wait()
            self._hide()  # as win32's loop does as it ends (X11's destroys the window)

        def _stop(self) -> None:
            self._stopped.set()

    return RecordingIcon


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_tray(
    pystray: Any,
    recorder: Recorder,
    *,
    notifications: bool = True,
    first: Status | None = None,
    failing_shows: int = 0,
) -> Any:
    """The tray, given its first status (by default, connecting), once it is shown."""
    from renderer.tray_pystray import PystrayTray

    def open_or_raise() -> None:
        with recorder.changed:
            recorder.opened += 1
            recorder.changed.notify_all()

    tray = PystrayTray(
        host_pid=4242,
        sender=RecordingSender(recorder),
        open_or_raise=open_or_raise,
        reporter=RecordingReporter(recorder),  # type: ignore[arg-type]
        icon_maker=recording_icon_class(pystray, recorder, notifications, failing_shows),
    )
    tray.update(first or status(state="connecting"))
    recorder.wait(lambda: bool(recorder.reports) and recorder.reports[-1].shown, "the icon shown")
    return tray


def pictures_set(recorder: Recorder) -> list[Any]:
    return [value for kind, value in recorder.calls if kind == "picture"]


def picture_is(recorder: Recorder, wanted: bytes) -> Callable[[], bool]:
    return lambda: pictures_set(recorder)[-1].tobytes() == wanted


def last_command_is(recorder: Recorder, kind: type[Command]) -> Callable[[], bool]:
    return lambda: bool(recorder.commands) and isinstance(recorder.commands[-1], kind)


def test_the_menu_entries_follow_the_model_with_open_window_the_default() -> None:
    look = tray_look(status(state="connected", authenticated=True, identity="user", username="a"))
    entries = menu_entries(look)
    assert [e.text for e in entries] == ["Open window", "Disconnect", "Sign out", "Quit"]
    assert [e.action for e in entries] == ["open", "disconnect", "logout", "quit"]
    assert [e.default for e in entries] == [True, False, False, False]
    # Only Quit stands apart.
    assert [e.separated for e in entries] == [False, False, False, True]
    assert [e.text for e in menu_entries(tray_look(None))] == ["Open window", "Quit"]


def test_the_tooltip_fits_in_what_windows_shows_whole_lines_first() -> None:
    long_server = "http://" + "a" * 90 + ".example:5324"
    look = tray_look(
        status(
            state="connecting",
            server=long_server,
            authenticated=True,
            identity="user",
            username="someone",
            buffered_chunks=12345,
            paused=True,
        )
    )
    assert len(look.tooltip) > TOOLTIP_LIMIT
    short = short_tooltip(look.tooltip)
    assert len(short) <= TOOLTIP_LIMIT
    # Whole lines, the first ones kept.
    assert look.tooltip.startswith(short)
    assert short.splitlines() == look.tooltip.splitlines()[: len(short.splitlines())]
    assert short.splitlines()[0] == "Log monitor: connecting…"
    # A tooltip that fits is left as it is; a first line too long alone is cut short.
    assert short_tooltip("Log monitor: connected") == "Log monitor: connected"
    cut = short_tooltip("x" * 300)
    assert (len(cut), cut[-1]) == (TOOLTIP_LIMIT, "…")


def test_the_toolkit_is_qt_where_the_host_runs_qt_pystray_on_windows_and_macos() -> None:
    assert tray_toolkit("linux", "qt", {}) == "qt"
    assert tray_toolkit("win32", None, {}) == "pystray"
    assert tray_toolkit("darwin", None, {}) == "pystray"
    # Linux with pywebview's own loop and nothing asked: no tray (Qt's needs the host's Qt).
    assert tray_toolkit("linux", None, {}) is None
    assert tray_toolkit("linux", "qt", {"LOG_MONITOR_TRAY": "pystray"}) == "pystray"
    assert tray_toolkit("linux", None, {"LOG_MONITOR_TRAY": "pystray"}) == "pystray"
    assert tray_toolkit("linux", "qt", {"LOG_MONITOR_TRAY": "something"}) == "qt"


def test_a_png_for_every_picture_square_with_transparency_and_each_state_its_own() -> None:
    seen: dict[str, bytes] = {}
    for name in TRAY_PICTURES:
        with Image.open(static_dir() / f"{name}.png") as picture:
            assert picture.format == "PNG"
            assert picture.size == (PICTURE_SIZE, PICTURE_SIZE)
            rgba = picture.convert("RGBA")
        alpha = rgba.getchannel("A")
        low, high = alpha.getextrema()
        assert (low, high) == (0, 255), name  # a transparent background around the glyph
        seen[name] = rgba.tobytes()
    assert len(set(seen.values())) == len(TRAY_PICTURES)


def test_the_icon_shows_each_status_picture_tooltip_and_menu(
    pystray_module: Any, recorder: Recorder
) -> None:
    tray = make_tray(pystray_module, recorder)
    try:
        # Before any status: the app's icon, Open window and Quit, not shown yet.
        before = recorder.reports[0]
        assert (before.host, before.shown, before.state, before.icon) == (4242, False, None, "icon")
        assert [item.text for item in before.menu] == ["Open window", "Quit"]
        # Shown with the first status's picture already set: no picture drawn before it.
        assert [kind for kind, _ in recorder.calls if kind in ("picture", "show")][:2] == [
            "picture",
            "show",
        ]
        connecting = tray._pictures["tray-connecting"].tobytes()
        assert pictures_set(recorder)[0].tobytes() == connecting
        shown_report = recorder.reports[-1]
        assert (shown_report.shown, shown_report.state) == (True, "connecting")

        for state in ("connected", "connecting", "disconnected", "error"):
            tray.update(status(state=state))
            report = last_report(recorder, state_is(state), f"state {state}")
            assert report.icon == f"tray-{state}"
            assert report.shown
            wanted = tray._pictures[f"tray-{state}"].tobytes()
            recorder.wait(picture_is(recorder, wanted), f"the {state} picture drawn")
            titles = [value for kind, value in recorder.calls if kind == "title"]
            assert titles[-1] == tray_look(status(state=state)).tooltip
        menus = [value for kind, value in recorder.calls if kind == "menu"]
        assert menus[-1] == ["Open window", "Connect", "- - - -", "Quit"]

        # Not a status: nothing changes.
        calls, reports = len(recorder.calls), len(recorder.reports)
        tray.update(Stats())
        tray.update(status(state="error"))
        recorder.wait(lambda: len(recorder.reports) > reports, "a report after the repeat")
        assert all(kind != "menu" for kind, _ in recorder.calls[calls:])
        assert all(kind != "picture" for kind, _ in recorder.calls[calls:])

        # Signed in: Sign out appears (the menu rebuilt, since its entries changed).
        tray.update(status(state="connected", authenticated=True, identity="user", username="a"))
        last_report(recorder, lambda r: len(r.menu) == 4, "Sign out in the menu")
        menus = [value for kind, value in recorder.calls if kind == "menu"]
        assert menus[-1] == ["Open window", "Disconnect", "Sign out", "- - - -", "Quit"]
        # Only a counter changed: the tooltip follows, the menu is not rebuilt.
        menu_count = len(menus)
        tray.update(
            status(
                state="connected",
                authenticated=True,
                identity="user",
                username="a",
                buffered_chunks=7,
            )
        )
        last_report(recorder, lambda r: "7 chunks waiting" in r.tooltip, "the count in the tip")
        assert len([1 for kind, _ in recorder.calls if kind == "menu"]) == menu_count
    finally:
        tray.close()


def test_a_show_that_fails_is_tried_again_until_the_icon_is_shown(
    pystray_module: Any, recorder: Recorder
) -> None:
    # pystray's X11 loop can call the setup before it can take a show; the host would end
    # after ``TRAY_WAIT_S`` with nothing shown if the tray gave up at the first failure.
    tray = make_tray(pystray_module, recorder, failing_shows=3)
    try:
        shows = [kind for kind, _ in recorder.calls if kind.endswith("show")]
        assert shows == ["failed show", "failed show", "failed show", "show"]
        assert recorder.reports[-1].shown
        assert tray.showing()
    finally:
        tray.close()
    assert recorder.reports[-1].closed


def test_an_x11_change_stuck_in_python_xlib_is_freed_by_reading_the_connection(
    pystray_module: Any, recorder: Recorder
) -> None:
    # python-xlib 0.33 can leave pystray's X11 loop waiting forever for a reply another
    # thread's flush took over; any later read of the connection frees it. The stand-in
    # picture update waits as the stuck loop does, until the connection is read.
    base = recording_icon_class(pystray_module, recorder, notifications=False)
    read = threading.Event()

    class StuckDisplay:
        def pending_events(self) -> int:
            recorder.add("connection read", None)
            read.set()
            return 0

    class StuckX11Icon(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._display = StuckDisplay()

        def _update_icon(self) -> None:
            if self.visible and not read.wait(WAIT_S):
                raise AssertionError("the stuck call was never freed")
            super()._update_icon()

    StuckX11Icon.__module__ = "pystray._xorg"  # what the tray takes for X11's backend
    from renderer.tray_pystray import PystrayTray

    tray = PystrayTray(
        host_pid=4242,
        sender=RecordingSender(recorder),
        open_or_raise=lambda: None,
        reporter=RecordingReporter(recorder),  # type: ignore[arg-type]
        icon_maker=StuckX11Icon,
    )
    try:
        tray.update(status(state="connecting"))
        last_report(recorder, lambda r: r.shown and r.state == "connecting", "the icon shown")
        assert ("connection read", None) not in recorder.calls  # nothing was stuck yet
        tray.update(status(state="connected"))
        last_report(recorder, state_is("connected"), "the connected state applied")
        kinds = [kind for kind, _ in recorder.calls]
        assert "connection read" in kinds
        assert kinds.index("connection read") < len(kinds) - kinds[::-1].index("picture")
    finally:
        tray.close()


def test_a_click_opens_and_the_entries_send_their_commands(
    pystray_module: Any, recorder: Recorder
) -> None:
    tray = make_tray(pystray_module, recorder)
    try:
        tray.update(status(state="connected", authenticated=True, identity="user", username="a"))
        last_report(recorder, lambda r: len(r.menu) == 4, "the signed-in menu")
        icon = tray._icon
        # A click on the icon: pystray runs the menu's default entry, Open window.
        icon()
        recorder.wait(lambda: recorder.opened == 1, "Open window")
        assert recorder.commands == []
        items = {str(item): item for item in icon.menu}
        for text, expected in (
            ("Disconnect", Disconnect),
            ("Sign out", Logout),
            ("Quit", Shutdown),
        ):
            items[text](icon)
            recorder.wait(last_command_is(recorder, expected), text)
        tray.update(status(state="disconnected"))
        last_report(recorder, lambda r: r.state == "disconnected", "disconnected")
        items = {str(item): item for item in icon.menu}
        assert "Sign out" not in items
        items["Connect"](icon)
        recorder.wait(lambda: isinstance(recorder.commands[-1], Connect), "Connect")
        items["Open window"](icon)
        recorder.wait(lambda: recorder.opened == 2, "Open window from the menu")
        assert len(recorder.commands) == 4
    finally:
        tray.close()


def test_a_notice_is_the_trays_notification_and_is_counted(
    pystray_module: Any, recorder: Recorder
) -> None:
    tray = make_tray(pystray_module, recorder)
    try:
        tray.notice("Signed out", "The server refused the session.")
        report = last_report(recorder, lambda r: r.messages == 1, "the notice counted")
        assert report.last_message == "Signed out"
        assert ("notify", ("Signed out", "The server refused the session.")) in recorder.calls
    finally:
        tray.close()
    closed = recorder.reports[-1]
    assert (closed.host, closed.closed) == (4242, True)
    assert ("hide", None) in recorder.calls


def test_a_long_notice_fits_in_a_windows_balloon(pystray_module: Any, recorder: Recorder) -> None:
    tray = make_tray(pystray_module, recorder)
    try:
        title = "Cannot reach the log server " + "x" * 80
        body = "Not connected to http://" + "a" * 300 + " for 6 minutes."
        tray.notice(title, body)
        last_report(recorder, lambda r: r.messages == 1, "the notice counted")
        [(shown_title, shown_body)] = [value for kind, value in recorder.calls if kind == "notify"]
        assert (len(shown_title), len(shown_body)) == (NOTICE_TITLE_LIMIT, NOTICE_BODY_LIMIT)
        assert shown_title == title[: NOTICE_TITLE_LIMIT - 1] + "…"
        assert shown_body.startswith("Not connected to http://aaa")
        assert recorder.reports[-1].last_message == title
        # What fits is shown as it is.
        assert short_notice("Signed out", "Sign in again.") == ("Signed out", "Sign in again.")
    finally:
        tray.close()


def test_a_backend_without_notifications_logs_the_notice_only(
    pystray_module: Any, recorder: Recorder
) -> None:
    tray = make_tray(pystray_module, recorder, notifications=False)
    try:
        tray.notice("Signed out", "The server refused the session.")
        tray.update(status(state="connected"))
        report = last_report(recorder, lambda r: r.state == "connected", "the next status")
        assert report.messages == 0
        assert all(kind != "notify" for kind, _ in recorder.calls)
    finally:
        tray.close()


def test_on_windows_a_notification_falls_back_to_the_tray(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Windows has no D-Bus: the real notify_over_dbus refuses there, whatever the
    # environment says (not for want of a bus at the address), and the notifier hands
    # the notification to the tray.
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    handed: list[Notification] = []

    def to_tray(notification: Notification) -> bool:
        handed.append(notification)
        return True

    notification = Notification(
        kind="signed_out", title="Signed out", body="The server refused the session."
    )

    async def deliver() -> list[tuple[str, Notification]]:
        notifier = DesktopNotifier(to_tray)
        # Set with the loop already running, so only the notifier sees Windows.
        monkeypatch.setattr(sys, "platform", "win32")
        notifier.start()
        notifier.submit(notification)
        await asyncio.wait_for(notifier.idle(), WAIT_S)
        await notifier.close()
        return list(notifier.delivered)

    caplog.set_level(logging.INFO, logger="log_monitor.notifications")
    assert asyncio.run(deliver()) == [("tray", notification)]
    assert handed == [notification]
    assert "no notification service (no D-Bus session bus); shown by the tray" in caplog.text


def test_a_tray_that_cannot_be_made_leaves_a_tray_only_host_nothing_to_show() -> None:
    # The host's native path (Windows) with a tray maker that fails (pystray missing, or
    # failing to start) and no window asked for: it ends with "nothing to show", the exit
    # the main process takes as no failure, without starting pywebview's loop.
    from ipc.host_launch import EXIT_NOTHING_TO_SHOW
    from renderer.host import RendererHost, TrayControl

    made: list[str] = []

    def no_parts(number: int) -> Any:
        raise AssertionError("no window was asked for")

    def failing_tray(host: RendererHost, loop: object) -> TrayControl:
        made.append("tried")
        raise ImportError("No module named 'pystray'")

    host = RendererHost(no_parts, gui=None, tray_maker=failing_tray)
    assert host.run() == EXIT_NOTHING_TO_SHOW
    assert made == ["tried"]
