"""The tray icon on a real desktop: Xvfb, Debian's ``trayer`` (an XEmbed system tray) and
``dunst`` on a private session bus (``tests.support.desktop_session.DesktopSession``), the real
server and ``log-monitor run --windows 0`` (what autostart runs).

What a person sees is asserted: the icon's window is embedded in the tray's panel (the X
window tree), its pixels change when the server goes away and come back when it returns,
a click on it opens a window, closing that window leaves the icon, and the menu's Quit
stops the main process. Without a tray, the host started to look for one ends with
"nothing to show", and the main process goes on alone, as before there was a tray.
``log-monitor windows --json`` is read for the tray's state, as a user would. Every wait
is for a condition, with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.processes import alive
from harness.server_process import ServerProcess, server_cli
from harness.waiting import wait_until
from ipc.host import connect_sync_client
from ipc.inspection import ask_windows
from ipc.messages import Connect, Ok, TrayState
from main_process.log_file import log_path
from tests.support.desktop_session import DesktopSession
from tests.support.live_main import PASSWORD, START_TIMEOUT_S, USER, LiveMain
from tests.support.tray_watch import TrayMain, desktop_env, embedded_at, shown

pytestmark = pytest.mark.timeout(300)

NOTHING_TO_SHOW_BOUND_S = 30.0


@pytest.fixture
def desktop(tmp_path: Path) -> Iterator[DesktopSession]:
    with DesktopSession(tmp_path / "desktop") as session:
        yield session


@pytest.fixture
def tray_main(desktop: DesktopSession, server: ServerProcess, tmp_path: Path) -> Iterator[TrayMain]:
    main = TrayMain(tmp_path / "client", desktop, server.url)
    try:
        yield main
    finally:
        main.close()


def placed(tray_main: TrayMain, desktop: DesktopSession) -> TrayState:
    """The tray connected, and reported where the X server has its icon."""
    tray_main.tray.wait(shown("connected"), START_TIMEOUT_S, "the tray to show connected")
    where = embedded_at(desktop)
    return tray_main.tray.wait(
        lambda t: shown("connected")(t) and t.geometry == where, 15, f"the icon at {where}"
    )


def icon_pixels(
    desktop: DesktopSession,
    tray: TrayState,
    path: Path,
    wanted: Callable[[bytes], bool] = lambda pixels: True,
    timeout: float = 15.0,
) -> bytes:
    """The icon's pixels once the X server shows a picture that ``wanted`` accepts and two
    grabs in a row agree: the host reports a state once it has set the picture, and the
    tray repaints it a little later (the X server has no event to wait for)."""
    geometry = tray.geometry
    assert geometry is not None
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        pixels = desktop.grab(path, geometry.x, geometry.y, geometry.width, geometry.height)
        if pixels == previous and wanted(pixels):
            return pixels
        assert time.monotonic() < deadline, "the tray icon's pixels did not settle as expected"
        previous = pixels


def test_the_icon_sits_in_the_tray_and_follows_the_server(
    tray_main: TrayMain, desktop: DesktopSession, server: ServerProcess, tmp_path: Path
) -> None:
    watch = tray_main.tray
    watch.wait(shown("connected"), START_TIMEOUT_S, "the tray to show connected")
    # The icon's window is embedded in trayer's panel, where the host says it is (the host
    # reads its place from Qt once a second: it is known only once the tray has placed it).
    where = embedded_at(desktop)
    connected = watch.wait(
        lambda t: shown("connected")(t) and t.geometry == where,
        15,
        f"the tray to report the icon at {where}",
    )
    # What `log-monitor windows --json` says: a tray, no window.
    report = tray_main.windows_json()
    assert report["windows"] == []
    tray = report["tray"]
    assert tray["host"] == report["host"] == connected.host
    assert (tray["available"], tray["shown"], tray["state"]) == (True, True, "connected")
    assert tray["icon"] == "tray-connected"
    assert [item["text"] for item in tray["menu"]] == ["Open window", "Disconnect", "Quit"]
    assert tray["tooltip"].splitlines() == [
        "Log monitor: connected",
        f"Server: {server.url}",
        "As a guest",
        tray["tooltip"].splitlines()[3],
    ]
    assert re.fullmatch(
        r"Nothing waiting to be sent|[\d,]+ chunks? waiting", tray["tooltip"].splitlines()[3]
    )
    connected_pixels = icon_pixels(desktop, connected, tmp_path / "connected.png")

    # The server goes away: the icon changes (its picture, not only its state).
    server.stop()
    gone = watch.wait(
        lambda t: t.shown and t.state in ("disconnected", "connecting"),
        15,
        "the tray to show the server gone",
    )
    report = tray_main.windows_json()
    assert report["tray"]["state"] in ("disconnected", "connecting")
    assert report["tray"]["icon"] == f"tray-{report['tray']['state']}"
    gone_pixels = icon_pixels(
        desktop, gone, tmp_path / "gone.png", lambda pixels: pixels != connected_pixels
    )
    assert gone_pixels != connected_pixels

    # It comes back (Connect skips the backoff's wait): the connected picture again.
    server.start()
    with connect_sync_client(tray_main.main.data_dir) as client:
        assert isinstance(client.request(Connect(), timeout=10), Ok)
    back = watch.wait(shown("connected"), 30, "the tray to show connected again")
    back_pixels = icon_pixels(
        desktop, back, tmp_path / "back.png", lambda pixels: pixels == connected_pixels
    )
    assert back_pixels == connected_pixels
    assert tray_main.windows_json()["tray"]["icon"] == "tray-connected"


def test_a_click_opens_a_window_and_closing_it_leaves_the_tray(
    tray_main: TrayMain, desktop: DesktopSession
) -> None:
    main = tray_main.main
    tray = placed(tray_main, desktop)
    geometry = tray.geometry
    assert geometry is not None
    centre = (str(geometry.x + geometry.width // 2), str(geometry.y + geometry.height // 2))
    desktop.xdotool("mousemove", *centre, "click", "1")
    [ref] = main.wait_windows(1)
    assert ref.host == tray.host  # opened in the tray's host
    assert main.watch.status().windows == 1
    # With a window open, a click raises it rather than opening another.
    host_log = log_path(main.data_dir, "windows")
    desktop.xdotool("mousemove", *centre, "click", "1")
    wait_until(
        lambda: f"raised window {ref.window}" in host_log.read_text(errors="replace"),
        15,
        "the host to raise the window",
    )
    since = time.time()
    main.watch.wait(lambda: main.watch.statuses[-1][0] >= since + 2.0, 30, "2 s of statuses")
    assert main.watch.status().windows == 1
    assert main.watch.ready_windows() == [ref]
    # Closed as a person would (the page's window.close()): the host lives on, tray shown.
    ask_windows(main.data_dir, "evaluate", script="window.close(); true", windows=(ref,), timeout=5)
    main.watch.wait(lambda: ref in main.watch.closed, 20, "the window to close")
    main.watch.wait(lambda: main.watch.status().windows == 0, 10, "no window counted")
    assert alive(tray.host)
    report = tray_main.windows_json()
    assert report["windows"] == []
    assert report["host"] == tray.host
    assert report["tray"]["shown"] is True
    # A second click brings a window back, in the same host.
    desktop.xdotool("mousemove", *centre, "click", "1")
    main.watch.wait(
        lambda: any(r.host == tray.host and r != ref for r in main.watch.ready_windows()),
        START_TIMEOUT_S,
        "a window again",
    )


def viewable_windows(desktop: DesktopSession) -> set[str]:
    """The top-level X windows named "Log monitor" that are mapped now (a menu while it
    is open)."""
    shown: set[str] = set()
    for line in desktop.top_level_windows():
        if '"Log monitor"' not in line or not re.search(r"\d+x\d+\+", line):
            continue
        window = line.split()[0]
        info = subprocess.run(
            ["xwininfo", "-id", window],
            env=desktop.environment(os.environ),
            capture_output=True,
            text=True,
            timeout=20,
        )
        if "IsViewable" in info.stdout:
            shown.add(window)
    return shown


def choose_in_menu(desktop: DesktopSession, tray: TrayState, *keys: str) -> None:
    """Open the icon's menu with a right click, as a person would, and choose an entry
    with the keyboard: ``keys`` move from no entry selected (Down: the first, Up: the
    last; the separator is skipped), then Return takes the entry."""
    geometry = tray.geometry
    assert geometry is not None
    # Shown windows, not the window tree: Qt keeps a closed menu's window (unmapped), so
    # a menu opened again can be the very window (same id and size) the tree held before.
    before = viewable_windows(desktop)

    def menu() -> set[str]:
        return viewable_windows(desktop) - before

    # A right click just after a menu closed can be lost on its way (the menu's pointer
    # grab is still being released): as a person would, click again, within the deadline.
    deadline = time.monotonic() + 20
    opened = False
    while not opened:
        assert time.monotonic() < deadline, "the menu did not open"
        desktop.xdotool(
            "mousemove",
            str(geometry.x + geometry.width // 2),
            str(geometry.y + geometry.height // 2),
            "click",
            "3",
        )
        click_deadline = time.monotonic() + 3
        while not (opened := bool(menu())) and time.monotonic() < click_deadline:
            time.sleep(0.05)  # polling the X server's window tree: there is no event to wait on
    desktop.xdotool("key", *keys, "Return")


def menu_texts(tray: TrayState) -> list[str]:
    return [item.text for item in tray.menu]


def test_quit_in_the_menu_stops_the_main_process(
    tray_main: TrayMain, desktop: DesktopSession, tmp_path: Path
) -> None:
    main = tray_main.main
    tray = placed(tray_main, desktop)
    choose_in_menu(desktop, tray, "Up")  # the last entry: Quit
    assert main.process.wait(30) == 0
    assert not main.running
    # Polling /proc: there is no event to wait on.
    wait_until(
        lambda: not alive(tray.host),
        10,
        "the renderer host to end with the main process",
        interval=0.05,
    )


def test_the_menu_disconnects_connects_and_signs_out_only_a_signed_in_user(
    desktop: DesktopSession, tmp_path: Path
) -> None:
    server_dir = tmp_path / "server"
    added = server_cli(server_dir, "add-user", USER, "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    server = ServerProcess(server_dir).start()
    tray_main = TrayMain(tmp_path / "client", desktop, server.url)
    main, watch = tray_main.main, tray_main.tray
    try:
        tray = placed(tray_main, desktop)
        # A guest: no Sign out.
        assert menu_texts(tray) == ["Open window", "Disconnect", "Quit"]
        # Disconnect (the second entry): the icon and the menu say so, and it stays so.
        choose_in_menu(desktop, tray, "Down", "Down")
        stopped = watch.wait(
            lambda t: t.shown and t.state == "disconnected" and "Connect" in menu_texts(t),
            15,
            "the tray to show disconnected with Connect",
        )
        assert menu_texts(stopped) == ["Open window", "Connect", "Quit"]
        main.watch.wait(
            lambda: main.watch.status().state == "disconnected", 10, "the main process stopped"
        )
        report = tray_main.windows_json()["tray"]
        assert (report["state"], report["icon"]) == ("disconnected", "tray-disconnected")
        # Connect (the same place): connected again.
        choose_in_menu(desktop, stopped, "Down", "Down")
        watch.wait(shown("connected"), 30, "the tray to show connected again")

        # Signed in: Sign out is in the menu, before Quit.
        login = main.command("login", "--identifier", USER, "--password-stdin", input_text=PASSWORD)
        assert login.returncode == 0, login.stderr
        signed_in = watch.wait(
            lambda t: shown("connected")(t) and "Sign out" in menu_texts(t),
            15,
            "Sign out in the menu",
        )
        assert menu_texts(signed_in) == ["Open window", "Disconnect", "Sign out", "Quit"]
        assert f"Signed in as {USER}" in signed_in.tooltip.splitlines()
        report = tray_main.windows_json()["tray"]
        assert [item["text"] for item in report["menu"]] == menu_texts(signed_in)
        # Sign out (Up: Quit, Up again: over the separator to Sign out): a guest again.
        choose_in_menu(desktop, signed_in, "Up", "Up")
        main.watch.wait(
            lambda: (
                main.watch.status().identity == "guest" and main.watch.status().state == "connected"
            ),
            20,
            "the main process signed out, connected as a guest",
        )
        guest = watch.wait(
            lambda t: shown("connected")(t) and "Sign out" not in menu_texts(t),
            15,
            "no Sign out in the menu",
        )
        assert "As a guest" in guest.tooltip.splitlines()
        assert main.running  # Sign out is not Quit
    finally:
        tray_main.close()
        server.stop()


def test_without_a_tray_closing_the_last_window_ends_the_host_as_before(
    server: ServerProcess, tmp_path: Path
) -> None:
    with DesktopSession(tmp_path / "bare", tray=False, notifications=False) as bare:
        main = LiveMain(tmp_path / "client", 1, server.url, display=desktop_env(bare))
        try:
            [ref] = main.wait_windows(1)
            ask_windows(
                main.data_dir, "evaluate", script="window.close(); true", windows=(ref,), timeout=5
            )
            main.watch.wait(lambda: ref in main.watch.closed, 20, "the window to close")
            # Polling /proc: there is no event to wait on.
            wait_until(
                lambda: not alive(ref.host),
                20,
                "the host to end with its last window",
                interval=0.05,
            )
            main.watch.wait(lambda: main.watch.status().windows == 0, 10, "no window counted")
            # The main process ships on alone, as before there was a tray.
            sent = main.watch.status().sent_chunks
            main.watch.wait(
                lambda: main.watch.status().sent_chunks > sent, 30, "more chunks shipped"
            )
            assert main.running
            assert main.watch.status().last_error is None
            result = main.command("windows", "--json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout) == {"host": None, "tray": None, "windows": []}
        finally:
            main.close()


def test_a_killed_tray_host_comes_back_with_its_tray(tray_main: TrayMain) -> None:
    first = tray_main.tray.wait(shown("connected"), START_TIMEOUT_S, "the tray")
    os.kill(first.host, signal.SIGKILL)
    again = tray_main.tray.wait(
        lambda t: t.shown and t.host != first.host, START_TIMEOUT_S, "a new host's tray"
    )
    assert alive(again.host)
    assert tray_main.windows_json()["tray"]["host"] == again.host


def full_log(main: LiveMain) -> str:
    return main.log_path.read_text(errors="replace")


def host_starts(main: LiveMain) -> list[str]:
    return re.findall(r"renderer host (\d+) started with 0 windows", full_log(main))


def test_without_a_tray_there_is_nothing_to_show_and_nothing_restarted(
    server: ServerProcess, tmp_path: Path
) -> None:
    with DesktopSession(tmp_path / "bare", tray=False, notifications=False) as bare:
        main = LiveMain(tmp_path / "client", 0, server.url, display=desktop_env(bare))
        try:
            main.watch.wait(
                lambda: bool(main.watch.statuses) and main.watch.status().state == "connected",
                30,
                "connected",
            )
            [pid] = host_starts(main)  # a host was started to look for a tray
            try:  # polling the log: there is no event to wait on
                wait_until(
                    lambda: "had nothing to show" in full_log(main),
                    NOTHING_TO_SHOW_BOUND_S,
                    "the host to say it had nothing to show",
                    interval=0.1,
                )
            except TimeoutError:
                raise AssertionError(main.log_text()) from None
            assert not alive(int(pid))
            ended_at = time.time()
            # Not a failure: no sentence, no lastError; and nothing started again while
            # the main process publishes for 3 s more.
            main.watch.wait(
                lambda: main.watch.statuses[-1][0] >= ended_at + 3.0, 30, "3 s more of statuses"
            )
            assert host_starts(main) == [pid]
            status = main.watch.status()
            assert status.last_error is None
            assert status.windows == 0
            assert "Windows cannot open" not in full_log(main)
            result = main.command("windows", "--json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout) == {"host": None, "tray": None, "windows": []}
            assert main.running
        finally:
            main.close()


def test_headless_runs_no_host_at_all(server: ServerProcess, tmp_path: Path) -> None:
    main = LiveMain(
        tmp_path / "client",
        0,
        server.url,
        display={"DISPLAY": None, "WAYLAND_DISPLAY": None, "QT_QPA_PLATFORM": None},
    )
    try:
        main.watch.wait(
            lambda: bool(main.watch.statuses) and main.watch.status().state == "connected",
            30,
            "connected",
        )
        assert "renderer host" not in full_log(main)
    finally:
        main.close()
