"""When to tell a person, through a desktop notification, that something needs them.

Owns ``NotificationPolicy``: an I/O-free class fed every ``Status`` the main process
publishes, the user's own Connect and Disconnect, and a clock, which returns the
``Notification``s to deliver (``main_process.desktop_notifications`` delivers them). Four
things need a person, each an **episode** that is notified once, at its start:

* **signed out**: the server refused to renew the session (``connection.state`` signs the
  user out and says so in ``lastError``: ``SIGNED_OUT_MESSAGE``, or
  ``CLIENT_MISMATCH_MESSAGE``). The episode lasts until a user is signed in again.
* **spool full**: reading is paused because the spool is at its bound. It ends once the
  spool has had room for ``spool_clear_s`` without a break, so a spool hovering at its
  bound (full, a few acks, full again) is one episode, not one notification a second.
* **dead-lettered**: the server refused chunks for good (the ``deadLettered`` count rose;
  the count the main process started with is old news). The episode ends after
  ``dead_letter_quiet_s`` with no new refusal; refusals meanwhile are the same episode.
* **unreachable**: not connected for ``unreachable_after`` seconds while the user wants to
  be (a Disconnect ends the episode and starts none; Connect starts the clock again). It
  ends when the connection is up.

Never a storm: besides once per episode, at most ``max_per_window`` notifications go out
per ``window_s`` seconds; one over that is dropped (and counted), and its episode counts
as notified. With ``enabled`` false nothing is returned, but episodes are still followed,
so the counters say what would have been notified.

Must not: do I/O, read the real clock (``now`` is passed in, monotonic seconds), or hold
anything secret (a notification names the server and the user, never a token).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ipc.messages import Status
from main_process.connection.state import CLIENT_MISMATCH_MESSAGE, SIGNED_OUT_MESSAGE

NotificationKind: TypeAlias = Literal["signed_out", "spool_full", "dead_lettered", "unreachable"]
Urgency: TypeAlias = Literal["normal", "critical"]

DEFAULT_UNREACHABLE_AFTER_S = 300.0
SPOOL_CLEAR_S = 60.0
DEAD_LETTER_QUIET_S = 600.0
MAX_PER_WINDOW = 3
WINDOW_S = 60.0
SIGN_OUT_NOTICES = frozenset({SIGNED_OUT_MESSAGE, CLIENT_MISMATCH_MESSAGE})


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification for the desktop: a title and a sentence or two."""

    kind: NotificationKind
    title: str
    body: str
    urgency: Urgency = "normal"


@dataclass(slots=True)
class NotificationCounters:
    sent: int = 0
    rate_limited: int = 0
    disabled: int = 0


@dataclass(slots=True)
class _Episodes:
    signed_out: bool = False
    spool_full: bool = False
    spool_room_since: float | None = None
    dead_letter_last: float | None = None
    unreachable_since: float | None = None
    unreachable_notified: bool = False


@dataclass(slots=True)
class _Seen:
    status: Status | None = None
    username: str | None = None  # the last user seen signed in
    dead_lettered: int | None = None  # the baseline: counted before this process started
    user_disconnected: bool = False
    recent: deque[float] = field(default_factory=deque)


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} minutes"


def _chunks(count: int) -> str:
    return "1 chunk" if count == 1 else f"{count:,} chunks"


class NotificationPolicy:
    """Episodes and rate limits; see the module docstring."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        unreachable_after: float = DEFAULT_UNREACHABLE_AFTER_S,
        spool_clear_s: float = SPOOL_CLEAR_S,
        dead_letter_quiet_s: float = DEAD_LETTER_QUIET_S,
        max_per_window: int = MAX_PER_WINDOW,
        window_s: float = WINDOW_S,
    ) -> None:
        self.enabled = enabled
        self.unreachable_after = unreachable_after
        self._spool_clear_s = spool_clear_s
        self._dead_letter_quiet_s = dead_letter_quiet_s
        self._max_per_window = max_per_window
        self._window_s = window_s
        self._episodes = _Episodes()
        self._seen = _Seen()
        self.counters = NotificationCounters()

    # ---- what happened ---------------------------------------------------------------

    def on_user_disconnect(self, now: float) -> None:
        """The user asked to go offline: not being connected is not news."""
        self._seen.user_disconnected = True
        self._episodes.unreachable_since = None
        self._episodes.unreachable_notified = False

    def on_user_connect(self, now: float) -> None:
        """The user asked to connect: from now on, not being connected is counted."""
        self._seen.user_disconnected = False
        status = self._seen.status
        if status is not None and status.state != "connected":
            self._episodes.unreachable_since = now

    def on_status(self, status: Status, now: float) -> list[Notification]:
        """A status as published; what to notify now."""
        seen = self._seen
        due: list[Notification] = []
        self._signed_out(status, due)
        self._spool(status, now, due)
        self._dead_letters(status, now, due)
        self._connection(status, now)
        if status.identity == "user" and status.username:
            seen.username = status.username
        seen.status = status
        due.extend(self._unreachable_due(now))
        return self._admit(due, now)

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (the unreachable timer), if ever."""
        episodes = self._episodes
        if episodes.unreachable_since is None or episodes.unreachable_notified:
            return None
        return episodes.unreachable_since + self.unreachable_after

    def tick(self, now: float) -> list[Notification]:
        """Time passed with no new status (the unreachable timer runs on it)."""
        return self._admit(self._unreachable_due(now), now)

    # ---- the episodes ----------------------------------------------------------------

    def _signed_out(self, status: Status, due: list[Notification]) -> None:
        episodes = self._episodes
        if status.identity == "user":
            episodes.signed_out = False
            return
        if episodes.signed_out or status.last_error not in SIGN_OUT_NOTICES:
            return
        episodes.signed_out = True
        who = self._seen.username
        whose = f"{who}'s session" if who else "the session"
        due.append(
            Notification(
                "signed_out",
                "Signed out",
                f"The server refused to renew {whose}; logs are still shipped, as a guest. "
                "Sign in again to ship them under your name.",
                "critical",
            )
        )

    def _spool(self, status: Status, now: float, due: list[Notification]) -> None:
        episodes = self._episodes
        full = status.spool_full or status.paused
        if full:
            episodes.spool_room_since = None
            if not episodes.spool_full:
                episodes.spool_full = True
                due.append(
                    Notification(
                        "spool_full",
                        "Reading paused: the local buffer is full",
                        f"{_chunks(status.buffered_chunks)} wait to be sent to {status.server}. "
                        "Log files are read again, from where they were left, once the "
                        "server takes them.",
                        "critical",
                    )
                )
            return
        if episodes.spool_full:
            if episodes.spool_room_since is None:
                episodes.spool_room_since = now
            elif now - episodes.spool_room_since >= self._spool_clear_s:
                episodes.spool_full = False
                episodes.spool_room_since = None

    def _dead_letters(self, status: Status, now: float, due: list[Notification]) -> None:
        seen, episodes = self._seen, self._episodes
        count = status.dead_lettered
        if seen.dead_lettered is None or count < seen.dead_lettered:
            seen.dead_lettered = count  # the first status, or a new spool: a new baseline
            return
        added = count - seen.dead_lettered
        seen.dead_lettered = count
        if episodes.dead_letter_last is not None and (
            now - episodes.dead_letter_last >= self._dead_letter_quiet_s
        ):
            episodes.dead_letter_last = None
        if added <= 0:
            return
        started = episodes.dead_letter_last is None
        episodes.dead_letter_last = now
        if started:
            due.append(
                Notification(
                    "dead_lettered",
                    "Chunks refused by the server",
                    f"The server refused {_chunks(added)} for good (too large or invalid); "
                    f"they are kept aside on disk, {count:,} in all.",
                )
            )

    def _connection(self, status: Status, now: float) -> None:
        episodes = self._episodes
        if status.state == "connected":
            episodes.unreachable_since = None
            episodes.unreachable_notified = False
        elif not self._seen.user_disconnected and episodes.unreachable_since is None:
            episodes.unreachable_since = now

    def _unreachable_due(self, now: float) -> list[Notification]:
        episodes = self._episodes
        since = episodes.unreachable_since
        status = self._seen.status
        if (
            since is None
            or episodes.unreachable_notified
            or status is None
            or now - since < self.unreachable_after
        ):
            return []
        episodes.unreachable_notified = True
        reason = f" Last error: {status.last_error}" if status.last_error else ""
        return [
            Notification(
                "unreachable",
                "Cannot reach the log server",
                f"Not connected to {status.server} for {_minutes(now - since)}; "
                f"{_chunks(status.buffered_chunks)} wait, kept on disk.{reason}",
            )
        ]

    # ---- the storm guard ---------------------------------------------------------------

    def _admit(self, due: list[Notification], now: float) -> list[Notification]:
        if not due:
            return []
        if not self.enabled:
            self.counters.disabled += len(due)
            return []
        recent = self._seen.recent
        while recent and now - recent[0] >= self._window_s:
            recent.popleft()
        admitted = []
        for notification in due:
            if len(recent) >= self._max_per_window:
                self.counters.rate_limited += 1
                continue
            recent.append(now)
            admitted.append(notification)
        self.counters.sent += len(admitted)
        return admitted
