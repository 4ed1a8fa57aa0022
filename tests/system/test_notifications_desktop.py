"""Notifications on a real desktop: ``dunst`` on a private session bus under Xvfb (with
``trayer`` for the tray), the real server and ``log-monitor run``.

What the notification daemon showed is read back from it (``dunstctl``: what is on the
screen and its history), as a person would have seen it: a session the server refuses to
renew (the reference server's ``revoke``) is one "Signed out" notification, an
unreachable server is one notification after ``--notify-unreachable-after``, nothing
comes with ``--no-notifications``, and with no notification daemon the tray shows it as
its own message. Every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.server_process import ServerProcess, server_cli
from harness.waiting import wait_until
from ipc.host import connect_sync_client
from ipc.messages import Connect, Ok
from main_process.connection.state import SIGNED_OUT_MESSAGE
from tests.support.desktop_session import DesktopSession
from tests.support.live_main import PASSWORD, START_TIMEOUT_S, USER, LiveMain
from tests.support.tray_watch import TrayMain, desktop_env, shown

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def desktop(tmp_path: Path) -> Iterator[DesktopSession]:
    with DesktopSession(tmp_path / "desktop") as session:
        yield session


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    directory = tmp_path / "server"
    added = server_cli(directory, "add-user", USER, "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    process = ServerProcess(directory).start()
    yield process
    process.stop()


def connected(main: LiveMain) -> None:
    main.watch.wait(
        lambda: bool(main.watch.statuses) and main.watch.status().state == "connected",
        START_TIMEOUT_S,
        "connected",
    )


def publishing_for(main: LiveMain, seconds: float) -> None:
    """Wait until the main process has published statuses for ``seconds`` more."""
    since = time.time()
    main.watch.wait(
        lambda: main.watch.statuses[-1][0] >= since + seconds,
        seconds + 30,
        f"{seconds} s more of statuses",
    )


def test_a_refused_refresh_is_one_signed_out_notification(
    desktop: DesktopSession, server: ServerProcess, tmp_path: Path
) -> None:
    tray_main = TrayMain(tmp_path / "client", desktop, server.url)
    main = tray_main.main
    try:
        connected(main)
        login = main.command("login", "--identifier", USER, "--password-stdin", input_text=PASSWORD)
        assert login.returncode == 0, login.stderr
        main.watch.wait(lambda: main.watch.status().identity == "user", 15, "signed in")
        # The tray offers Sign out while signed in.
        tray_main.tray.wait(
            lambda t: shown("connected")(t) and "Sign out" in [i.text for i in t.menu],
            15,
            "Sign out in the tray's menu",
        )
        assert desktop.notifications_seen() == 0

        # The server ends alice's sessions: the next chunk is refused, the refresh too.
        revoked = server_cli(server.data_dir, "revoke", USER)
        assert revoked.returncode == 0, revoked.stderr
        main.watch.wait(
            lambda: main.watch.status().last_error == SIGNED_OUT_MESSAGE,
            30,
            "the main process to sign out",
        )
        wait_until(lambda: desktop.notifications_seen() >= 1, 15, "dunst to show a notification")
        publishing_for(main, 3.0)  # the sign-out notice stays in every status meanwhile
        [seen] = desktop.notification_history()
        assert seen["appname"] == "Log monitor"
        assert seen["summary"] == "Signed out"
        assert USER in seen["body"]
        assert "as a guest" in seen["body"]
        tray_main.tray.wait(
            lambda t: "Sign out" not in [i.text for i in t.menu], 15, "no Sign out in the menu"
        )
    finally:
        tray_main.close()


def test_an_unreachable_server_is_one_notification_after_the_setting(
    desktop: DesktopSession, server: ServerProcess, tmp_path: Path
) -> None:
    main = LiveMain(
        tmp_path / "client",
        0,
        server.url,
        display=desktop_env(desktop),
        extra=("--notify-unreachable-after", "2"),
    )
    try:
        connected(main)
        stopping = time.monotonic()  # the connection cannot drop before this
        server.stop()
        wait_until(lambda: desktop.notifications_seen() >= 1, 30, "dunst to show a notification")
        took = time.monotonic() - stopping
        assert took >= 2.0, took  # not before the setting
        publishing_for(main, 3.0)
        [seen] = desktop.notification_history()
        assert seen["summary"] == "Cannot reach the log server"
        assert server.url in seen["body"]
        print(f"\nunreachable notification shown {took:.1f} s after the server began to stop")
        # Back, then gone again: a new episode, one more notification.
        server.start()
        with connect_sync_client(main.data_dir) as client:  # Connect skips the backoff's wait
            assert isinstance(client.request(Connect(), timeout=10), Ok)
        connected(main)
        publishing_for(main, 3.0)
        assert desktop.notifications_seen() == 1  # nothing for coming back
        server.stop()
        wait_until(lambda: desktop.notifications_seen() >= 2, 30, "a second notification")
        publishing_for(main, 3.0)
        assert [n["summary"] for n in desktop.notification_history()] == [
            "Cannot reach the log server"
        ] * 2
    finally:
        main.close()


def test_a_full_spool_is_one_notification_until_the_server_takes_it_all(
    desktop: DesktopSession, server: ServerProcess, tmp_path: Path
) -> None:
    # 3 MiB of lines for a 1 MiB spool, with the server away: reading pauses.
    big = tmp_path / "big.log"
    line = "x" * 1000 + "\n"
    big.write_text(line * (3 * 1024))
    server.stop()
    main = LiveMain(
        tmp_path / "client",
        0,
        server.url,
        display=desktop_env(desktop),
        extra=("--spool-max-mb", "1", str(big)),
    )
    try:
        main.watch.wait(
            lambda: bool(main.watch.statuses) and main.watch.status().paused,
            START_TIMEOUT_S,
            "reading paused on a full spool",
        )
        wait_until(lambda: desktop.notifications_seen() >= 1, 15, "dunst to show a notification")
        [seen] = desktop.notification_history()
        assert seen["summary"] == "Reading paused: the local buffer is full"
        assert server.url in seen["body"]
        # The server comes back and takes it all; the spool fills and drains again on the
        # way (reading goes on from where it paused): still that one notification.
        server.start()
        with connect_sync_client(main.data_dir) as client:
            assert isinstance(client.request(Connect(), timeout=10), Ok)
        main.watch.wait(
            lambda: (
                main.watch.status().sent_bytes >= big.stat().st_size
                and main.watch.status().buffered_chunks == 0
                and not main.watch.status().paused
            ),
            120,
            "every line of the big file sent",
        )
        assert any(s.paused for _, s in main.watch.statuses)
        publishing_for(main, 2.0)
        assert desktop.notifications_seen() == 1
    finally:
        main.close()


def test_chunks_refused_for_good_are_one_notification(tmp_path: Path) -> None:
    # A server that takes chunks of 1,000 bytes at most: lines of 4,000 are refused.
    server = ServerProcess(tmp_path / "server", "--max-chunk-bytes", "1000").start()
    long_lines = tmp_path / "long.log"
    long_lines.write_text("".join(f"{i:04d}" + "y" * 3995 + "\n" for i in range(5)))
    with DesktopSession(tmp_path / "desktop", tray=False) as desktop:
        main = LiveMain(
            tmp_path / "client",
            0,
            server.url,
            display=desktop_env(desktop),
            extra=(str(long_lines),),
        )
        try:
            main.watch.wait(
                lambda: bool(main.watch.statuses) and main.watch.status().dead_lettered >= 1,
                START_TIMEOUT_S,
                "the long lines dead-lettered",
            )
            wait_until(
                lambda: desktop.notifications_seen() >= 1, 15, "dunst to show a notification"
            )
            publishing_for(main, 3.0)
            [seen] = desktop.notification_history()
            assert seen["summary"] == "Chunks refused by the server"
            assert "kept aside on disk" in seen["body"]
            assert main.watch.status().state == "connected"  # and shipping goes on
        finally:
            main.close()
            server.stop()


def test_no_notifications_when_they_are_turned_off(
    desktop: DesktopSession, server: ServerProcess, tmp_path: Path
) -> None:
    main = LiveMain(
        tmp_path / "client",
        0,
        server.url,
        display=desktop_env(desktop),
        extra=("--no-notifications", "--notify-unreachable-after", "1"),
    )
    try:
        connected(main)
        server.stop()
        main.watch.wait(lambda: main.watch.status().state != "connected", 15, "disconnected")
        publishing_for(main, 4.0)  # well past the second the setting allows
        assert desktop.notifications_seen() == 0
        assert "notification:" not in main.log_path.read_text(errors="replace")
    finally:
        main.close()


def test_without_a_notification_service_the_tray_shows_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    with DesktopSession(tmp_path / "tray-only", tray=True, notifications=False) as desktop:
        tray_main = TrayMain(
            tmp_path / "client", desktop, server.url, "--notify-unreachable-after", "1"
        )
        try:
            tray_main.tray.wait(shown("connected"), START_TIMEOUT_S, "the tray")
            server.stop()
            told = tray_main.tray.wait(lambda t: t.messages >= 1, 30, "the tray to show a message")
            assert told.last_message == "Cannot reach the log server"
            publishing_for(tray_main.main, 3.0)
            assert tray_main.windows_json()["tray"]["messages"] == 1
            assert "shown by the tray" in tray_main.main.log_path.read_text(errors="replace")
        finally:
            tray_main.close()
