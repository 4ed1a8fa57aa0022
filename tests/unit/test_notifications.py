"""The notification policy with a fake clock, and the delivery's fallbacks.

``NotificationPolicy`` is fed statuses as the main process publishes them and a clock it
is handed: every episode is notified once, at its start, and never more than the rate
limit allows. ``DesktopNotifier`` delivers in order and falls back to the tray, then to
the log, where the session has no notification service; ``notify_over_dbus`` is tried
against a real session bus with no such service on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipc.messages import Status
from main_process.connection.state import CLIENT_MISMATCH_MESSAGE, SIGNED_OUT_MESSAGE
from main_process.desktop_notifications import (
    DELIVERED_KEPT,
    DesktopNotifier,
    NoNotificationService,
    notify_over_dbus,
)
from main_process.notifications import Notification, NotificationPolicy
from tests.support.desktop_session import start_session_bus

SERVER = "http://127.0.0.1:5324"


def status(**fields: Any) -> Status:
    base: dict[str, Any] = {"state": "connected", "server": SERVER, "identity": "guest"}
    base.update(fields)
    return Status(**base)


def signed_in(**fields: Any) -> Status:
    return status(authenticated=True, identity="user", username="alice", **fields)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def kinds(notifications: list[Notification]) -> list[str]:
    return [n.kind for n in notifications]


# ---- signed out ----------------------------------------------------------------------------


@pytest.mark.parametrize("notice", [SIGNED_OUT_MESSAGE, CLIENT_MISMATCH_MESSAGE])
def test_a_sign_out_by_the_server_is_one_notification_until_signed_in_again(notice: str) -> None:
    clock = Clock()
    policy = NotificationPolicy()
    assert policy.on_status(signed_in(), clock.now) == []
    [told] = policy.on_status(status(identity=None, last_error=notice), clock.advance(1))
    assert told.kind == "signed_out"
    assert told.title == "Signed out"
    assert "alice" in told.body
    assert told.urgency == "critical"
    # The notice stays in lastError through the guest connection: no repeat.
    for _ in range(50):
        assert policy.on_status(status(last_error=notice), clock.advance(1)) == []
    # Signed in again, then signed out again: a new episode.
    assert policy.on_status(signed_in(), clock.advance(1)) == []
    assert kinds(policy.on_status(status(last_error=notice), clock.advance(120))) == ["signed_out"]


def test_a_sign_out_asked_for_is_not_notified() -> None:
    clock = Clock()
    policy = NotificationPolicy()
    policy.on_status(signed_in(), clock.now)
    assert policy.on_status(status(), clock.advance(1)) == []
    assert policy.on_status(status(last_error="server refused the connection: x"), 2000) == []


# ---- spool full ----------------------------------------------------------------------------


def test_a_full_spool_is_one_notification_however_often_it_flaps() -> None:
    clock = Clock()
    policy = NotificationPolicy(spool_clear_s=60)
    assert policy.on_status(status(), clock.now) == []
    [told] = policy.on_status(
        status(spool_full=True, paused=True, buffered_chunks=512), clock.advance(1)
    )
    assert told.kind == "spool_full"
    assert "512 chunks" in told.body
    assert SERVER in told.body
    # Full, a little room, full again, for ten minutes: the same episode.
    for second in range(600):
        full = second % 3 != 0
        assert policy.on_status(status(spool_full=full, paused=full), clock.advance(1)) == []
    # Room for a whole minute ends it; the next full spool is a new episode.
    for _ in range(61):
        assert policy.on_status(status(), clock.advance(1)) == []
    assert kinds(policy.on_status(status(spool_full=True, paused=True), clock.advance(1))) == [
        "spool_full"
    ]


# ---- dead letters --------------------------------------------------------------------------


def test_refused_chunks_are_one_notification_per_quiet_spell_and_old_ones_none() -> None:
    clock = Clock()
    policy = NotificationPolicy(dead_letter_quiet_s=600)
    # Dead letters from earlier runs are old news.
    assert policy.on_status(status(dead_lettered=7), clock.now) == []
    [told] = policy.on_status(status(dead_lettered=9), clock.advance(1))
    assert told.kind == "dead_lettered"
    assert "refused 2 chunks" in told.body
    assert "9 in all" in told.body
    # More refusals within the quiet spell: the same episode.
    for count in range(10, 40):
        assert policy.on_status(status(dead_lettered=count), clock.advance(30)) == []
    # Ten quiet minutes end it.
    assert policy.on_status(status(dead_lettered=39), clock.advance(601)) == []
    assert kinds(policy.on_status(status(dead_lettered=40), clock.advance(1))) == ["dead_lettered"]


# ---- unreachable ---------------------------------------------------------------------------


def test_unreachable_is_notified_once_after_the_setting() -> None:
    clock = Clock()
    policy = NotificationPolicy(unreachable_after=300)
    assert policy.on_status(status(), clock.now) == []
    assert policy.on_status(status(state="disconnected", attempt=1), clock.advance(1)) == []
    assert policy.tick(clock.advance(298)) == []
    assert policy.on_status(status(state="connecting", attempt=5), clock.advance(0.5)) == []
    [told] = policy.tick(clock.advance(1.6))
    assert told.kind == "unreachable"
    assert SERVER in told.body
    assert "5 minutes" in told.body
    for _ in range(100):
        assert policy.tick(clock.advance(60)) == []
        assert policy.on_status(status(state="disconnected"), clock.now) == []
    # Connected again: the next outage starts its own clock.
    assert policy.on_status(status(), clock.advance(1)) == []
    assert policy.on_status(status(state="disconnected"), clock.advance(1)) == []
    assert policy.tick(clock.advance(299)) == []
    assert kinds(policy.tick(clock.advance(1))) == ["unreachable"]


def test_the_users_disconnect_is_not_unreachable_and_connect_restarts_the_clock() -> None:
    clock = Clock()
    policy = NotificationPolicy(unreachable_after=300)
    policy.on_status(status(), clock.now)
    policy.on_user_disconnect(clock.advance(1))
    assert policy.on_status(status(state="disconnected"), clock.advance(1)) == []
    assert policy.tick(clock.advance(3600)) == []
    policy.on_user_connect(clock.advance(1))
    assert policy.on_status(status(state="connecting"), clock.advance(1)) == []
    assert policy.tick(clock.advance(298)) == []
    assert kinds(policy.tick(clock.advance(2))) == ["unreachable"]


def test_not_connected_from_the_start_counts_from_the_start() -> None:
    clock = Clock()
    policy = NotificationPolicy(unreachable_after=10)
    assert policy.on_status(status(state="connecting"), clock.now) == []
    assert kinds(policy.tick(clock.advance(10))) == ["unreachable"]


# ---- never a storm, and off ------------------------------------------------------------------


def test_at_most_three_a_minute_and_nothing_when_off() -> None:
    clock = Clock()
    policy = NotificationPolicy(unreachable_after=1, max_per_window=3, window_s=60)
    policy.on_status(signed_in(dead_lettered=0), clock.now)
    everything = status(
        state="disconnected",
        last_error=SIGNED_OUT_MESSAGE,
        spool_full=True,
        paused=True,
        dead_lettered=5,
    )
    told = policy.on_status(everything, clock.advance(2))
    assert kinds(told) == ["signed_out", "spool_full", "dead_lettered"]
    assert policy.tick(clock.advance(1)) == []  # unreachable is due, but the minute is full
    assert policy.counters.rate_limited == 1
    assert policy.tick(clock.advance(120)) == []  # and its episode counts as notified

    quiet = NotificationPolicy(enabled=False, unreachable_after=1)
    quiet.on_status(signed_in(), clock.now)
    assert quiet.on_status(everything, clock.advance(2)) == []
    assert quiet.tick(clock.advance(5)) == []
    assert quiet.counters.disabled == 4
    assert quiet.counters.sent == 0


# ---- delivery ------------------------------------------------------------------------------

SIGNED_OUT = Notification("signed_out", "Signed out", "body", "critical")
UNREACHABLE = Notification("unreachable", "Cannot reach the log server", "body")


async def test_delivery_is_in_order_and_falls_back_to_the_tray_then_the_log() -> None:
    shown_by_service: list[str] = []
    service_up = True
    tray_up = True
    by_tray: list[str] = []

    async def notify(notification: Notification) -> int:
        if not service_up:
            raise NoNotificationService("nothing owns org.freedesktop.Notifications")
        shown_by_service.append(notification.title)
        return len(shown_by_service)

    def tray(notification: Notification) -> bool:
        if tray_up:
            by_tray.append(notification.title)
        return tray_up

    notifier = DesktopNotifier(tray, notify)
    notifier.start()
    try:
        for notification in (SIGNED_OUT, UNREACHABLE):
            notifier.submit(notification)
        await _delivered(notifier, 2)
        service_up = False
        notifier.submit(UNREACHABLE)
        await _delivered(notifier, 3)
        tray_up = False
        notifier.submit(SIGNED_OUT)
        await _delivered(notifier, 4)
    finally:
        await notifier.close()
    assert shown_by_service == ["Signed out", "Cannot reach the log server"]
    assert by_tray == ["Cannot reach the log server"]
    assert [how for how, _ in notifier.delivered] == ["dbus", "dbus", "tray", "log"]


async def test_only_the_latest_deliveries_are_remembered() -> None:
    async def notify(notification: Notification) -> int:
        return 1

    notifier = DesktopNotifier(lambda notification: False, notify)
    notifier.start()
    try:
        for number in range(DELIVERED_KEPT + 10):
            notifier.submit(Notification("unreachable", f"#{number}", "body"))
        await _delivered(notifier, DELIVERED_KEPT)
    finally:
        await notifier.close()
    assert notifier.delivered[0][1].title == "#10"
    assert notifier.delivered[-1][1].title == f"#{DELIVERED_KEPT + 9}"


async def _delivered(notifier: DesktopNotifier, count: int) -> None:
    async with asyncio.timeout(10):
        await notifier.idle()
    assert len(notifier.delivered) == count


@pytest.fixture
def empty_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    bus, address = start_session_bus(tmp_path)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    try:
        yield address
    finally:
        bus.terminate()
        bus.wait(10)


async def test_a_bus_without_a_notification_service_is_said_so(empty_bus: str) -> None:
    with pytest.raises(NoNotificationService, match="ServiceUnknown"):
        await notify_over_dbus(UNREACHABLE)


async def test_no_session_bus_is_said_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'nobody'}")
    with pytest.raises(NoNotificationService, match="cannot be reached"):
        await notify_over_dbus(UNREACHABLE)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    with pytest.raises(NoNotificationService, match="no D-Bus session bus"):
        await notify_over_dbus(UNREACHABLE)
