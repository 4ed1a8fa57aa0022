"""What the viewers are told: status, recent lines, stats and the shipping history.

Owns the composition of the ``Status`` message (the connection's state, the spool's
counters, whether reading is paused, and the one ``lastError`` chosen from the token
store's, the connection's, the windows' and the sources' problems), the recent lines not
yet published, and the loop that publishes them:

- Status is published on every change of the connection, and otherwise when the spool's
  counters moved, at most every ``STATUS_INTERVAL`` seconds: an ack storm must not become
  a publish storm, and a viewer still sees counters move several times a second.
- Nothing polls: changes (appends, acks, connection states, window reports, a host
  ending) call ``wanted``/``dirty``, and the loop's timeout is the next thing due (the
  stats, the notifications' next deadline, the retry countdown, a host to reap).
- Every ``STATS_INTERVAL`` the spool's totals go into ``shipping_history.ShippingRecorder``
  and the last ten minutes are published as ``ShippingHistory`` (cached: a window opened
  late draws them at once).
- Every status published is shown to ``notifications.NotificationPolicy``; what it says
  needs a person goes to the ``desktop_notifications.DesktopNotifier``, else to the
  tray's own message.

Must not: change the connection, the spool or the sources (it reads their counters and
wakes the sources when room was freed), or block the loop on a viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

from ipc.messages import LogLine, LogLines, Published, Stats, Status, TrayNotice
from main_process.connection.state import ConnectionStatus
from main_process.notifications import Notification

if TYPE_CHECKING:
    from main_process.app import MainProcess

STATUS_INTERVAL = 0.1
STATS_INTERVAL = 1.0
RECENT_LINES_PER_PUBLISH = 500
# How far from its end a chunk is searched for the newlines that make it cover every
# recent line by itself (100-byte lines: 512 KiB chunks are covered within 51 KiB).
_COVERAGE_SEARCH_CHARS = 64 * 1024
# Chunks held unsplit at most; older ones are split at once (long lines, many files).
_HELD_CHUNKS = 8


def last_lines(text: str, count: int) -> list[str]:
    """The last ``count`` lines of ``text``, as ``str.splitlines`` cuts them, splitting
    only the end of it: a 512 KiB chunk holds thousands of lines, and the viewers are
    sent the last few hundred."""
    start = len(text)
    # After the (count + 1)-th newline from the end, at least ``count`` lines remain; a
    # cut just after a newline is a line boundary for every separator splitlines knows.
    for _ in range(count + 1):
        start = text.rfind("\n", 0, start)
        if start < 0:
            return text.splitlines()[-count:] if count > 0 else []
    return text[start + 1 :].splitlines()[-count:] if count > 0 else []


class RecentLines:
    """The last ``RECENT_LINES_PER_PUBLISH`` lines appended, for the next publication.

    Each chunk gives its own last lines (``last_lines``), newest last, as if every chunk
    were split as it arrived. Splitting is left to ``take``: between two publications
    hundreds of 512 KiB chunks may arrive, and splitting each costs about 0.2 ms. A chunk
    whose end holds more newlines than the publication has lines covers every older chunk,
    so those are dropped unsplit; otherwise at most ``_HELD_CHUNKS`` wait unsplit (the
    memory they hold stays bounded) and older ones are split at once.
    """

    def __init__(self) -> None:
        self._lines: deque[LogLine] = deque(maxlen=RECENT_LINES_PER_PUBLISH)
        self._held: deque[tuple[str, str]] = deque()

    def add(self, path: str, text: str) -> None:
        if not text:
            return  # no line in it
        start = max(0, len(text) - _COVERAGE_SEARCH_CHARS)
        if text.count("\n", start) > RECENT_LINES_PER_PUBLISH:
            # More newlines than lines published: last_lines takes them all from it.
            self._lines.clear()
            self._held.clear()
        elif len(self._held) >= _HELD_CHUNKS:
            self._split(*self._held.popleft())
        self._held.append((path, text))

    def take(self) -> tuple[LogLine, ...]:
        """The recent lines, oldest first; none are held afterwards."""
        while self._held:
            self._split(*self._held.popleft())
        lines = tuple(self._lines)
        self._lines.clear()
        return lines

    def __bool__(self) -> bool:
        return bool(self._held) or bool(self._lines)

    def _split(self, path: str, text: str) -> None:
        for line in last_lines(text, RECENT_LINES_PER_PUBLISH):
            self._lines.append(LogLine(path=path, text=line))


class StatusPublication:
    """The main process's publications to its viewers; see the module docstring."""

    def __init__(self, main: MainProcess) -> None:
        self._main = main
        # Something to publish (a change, an ack, a window report): wakes the publisher.
        self._publish_wanted = asyncio.Event()
        self._status_changed = False
        self._recent_lines = RecentLines()
        self._last_status: Status | None = None
        # The problems ``lastError`` chooses from, after the connection's own.
        self.token_store_error: str | None = None
        # Why the last window could not start; cleared when a window shows its page.
        self.window_error: str | None = None
        self.source_warning: str | None = None

    def dirty(self) -> None:
        """The status changed: publish it with the next round."""
        self._status_changed = True
        self._publish_wanted.set()

    def wanted(self) -> None:
        """Counters or lines moved: a round is due (status only if it differs)."""
        self._publish_wanted.set()

    def add_lines(self, path: str, text: str) -> None:
        self._recent_lines.add(path, text)
        self._publish_wanted.set()

    def publish(self, message: Published) -> None:
        host = self._main.host
        if host is not None:
            host.publisher.publish(message)

    def current_status(self, connection: ConnectionStatus | None = None) -> Status:
        main = self._main
        spool = main.spool.stats()
        if connection is None and main.connection is not None:
            connection = main.connection.status()
        paused = main.sources.paused_reason is not None or any(f.paused for f in main.feeds)
        last_error = connection.last_error if connection else None
        if paused:
            last_error = (
                last_error or "the spool is full: reading paused until the server catches up"
            )
        return Status(
            state=connection.state if connection else "disconnected",
            authenticated=connection.authenticated if connection else False,
            identity=connection.identity if connection else None,
            username=connection.username if connection else None,
            attempt=connection.attempt if connection else 0,
            next_retry_ms=connection.next_retry_ms if connection else None,
            server=main.server_url,
            client_id=main.connection.client_id if main.connection else main.client_id,
            buffered_chunks=spool.buffered_chunks,
            buffered_bytes=spool.buffered_bytes,
            sent_chunks=spool.sent_chunks,
            sent_bytes=spool.sent_bytes,
            dead_lettered=spool.dead_lettered,
            last_error=self.token_store_error
            or last_error
            or self.window_error
            or self.source_warning,
            windows=main.windows.count,
            spool_full=spool.full,
            paused=paused,
            credential_store=main.token_store_name,
            game=main.game,
        )

    def publish_status(self, connection: ConnectionStatus | None = None) -> None:
        host = self._main.host
        if host is None:
            return
        status = self.current_status(connection)
        self._status_changed = False
        if status != self._last_status:
            self._last_status = status
            host.publisher.publish(status)
            self._notify(self._main.notifications.on_status(status, time.monotonic()))

    def _notify(self, notifications: list[Notification]) -> None:
        for notification in notifications:
            self._main.notifier.submit(notification)

    def show_in_tray(self, notification: Notification) -> bool:
        """The fallback where the desktop has no notification service: the tray's own
        message, if the host reports a tray shown."""
        tray = self._main.windows.tray
        if tray is None or not tray.shown:
            return False
        self.publish(TrayNotice(host=tray.host, title=notification.title, body=notification.body))
        return True

    def _next_wake(self, now: float, stats_due: float, countdown_due: float) -> float:
        """Seconds until something is due with nothing else happening: the stats (and the
        history chart) every ``STATS_INTERVAL``, the notifications' next deadline, the
        retry countdown while one is shown, and a host that ended but is not reaped."""
        due = stats_due
        notification_due = self._main.notifications.next_deadline()
        if notification_due is not None:
            due = min(due, notification_due)
        if self._last_status is not None and self._last_status.next_retry_ms is not None:
            due = min(due, countdown_due)
        if self._main.windows.waiting_to_reap():
            due = min(due, now + STATUS_INTERVAL)
        return max(0.0, due - now)

    async def run(self) -> None:
        """Publish status, lines, stats and history when something changed or is due."""
        main = self._main
        last_stats = time.monotonic()
        last_sent = main.spool.stats()
        countdown_refresh = time.monotonic()
        last_publish = -STATUS_INTERVAL
        while True:
            now = time.monotonic()
            if not self._publish_wanted.is_set():
                timeout = self._next_wake(now, last_stats + STATS_INTERVAL, countdown_refresh + 1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._publish_wanted.wait(), timeout)
                now = time.monotonic()
            if now < last_publish + STATUS_INTERVAL:
                await asyncio.sleep(last_publish + STATUS_INTERVAL - now)
                now = time.monotonic()
            self._publish_wanted.clear()
            last_publish = now
            self._notify(main.notifications.tick(now))
            ended = main.windows.reap()
            if ended is not None:
                main.on_host_ended(ended)
            spool = main.spool.stats()
            retrying = self._last_status is not None and self._last_status.next_retry_ms is not None
            if (
                self._status_changed
                or spool != last_sent
                or (retrying and now - countdown_refresh >= 1)
            ):
                countdown_refresh = now
                self.publish_status()
            if self._recent_lines and main.host is not None:
                main.host.publisher.publish(LogLines(lines=self._recent_lines.take()))
            if now - last_stats >= STATS_INTERVAL and main.host is not None:
                elapsed = now - last_stats
                progress = main.sources.progress()
                main.host.publisher.publish(
                    Stats(
                        send_rate_chunks=(spool.sent_chunks - last_sent.sent_chunks) / elapsed,
                        send_rate_bytes=(spool.sent_bytes - last_sent.sent_bytes) / elapsed,
                        files_done=progress.files_done,
                        files_total=progress.files_total,
                        bytes_done=progress.bytes_done,
                        bytes_total=progress.bytes_total,
                        decode_errors=main.sources.counters().invalid_bytes_replaced
                        + sum(feed.invalid_bytes_replaced for feed in main.feeds),
                        checkpoints=main.sources.state_counts().checkpoints,
                        backlog_marks=main.sources.state_counts().backlog_marks,
                    )
                )
                main.shipping.record(
                    now, time.time_ns() // 1_000_000, spool.sent_bytes, spool.buffered_chunks
                )
                main.host.publisher.publish(main.shipping.history())
                last_stats = now
                last_sent = spool
