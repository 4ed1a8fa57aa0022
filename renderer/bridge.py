"""The bridges: move published messages into the windows' pages, at a bounded rate.

Owns ``Bridge``, one per window, and ``PushScheduler``, one per host:

* ``Bridge.offer(message)``, called by the window's ``UpdateSource`` on the source's
  thread, folds each message into the window's ``UpdateCoalescer`` (bounded, so a flood
  costs CPU, never memory) and returns at once. Folding on the source's thread keeps the
  source drained while a page is busy (a ZeroMQ subscriber that stops reading would hit
  its high-water mark and lose state updates that the coalescer would have merged).
* the scheduler's one thread takes the coalesced update of every window that has one,
  whose previous push has been run by its page and whose last push started at least
  ``1 / max_rate_hz`` ago, and starts them all in the pages together: one job for the GUI
  thread, however many windows. At most one update per window is ever in flight;
  everything newer waits, coalesced, so a slow page holds back only its own window. A
  push the page has not run after ``PUSH_TIMEOUT_S`` is given up (the next one carries
  the present anyway).

Why one thread for every window's pushes: an update reaches all windows at once, and
with a pushing thread per window, eight threads woke for each and queued eight jobs on
the GUI thread one by one. Measured with eight windows (``bench/window_latency.py``),
publish → page DOM went from p50 3.8-4.8 ms, p99 14-24 ms (four runs) to p50 2.3-3.7 ms,
p99 9-11 ms (four of five runs; 19 ms in one, on a busy machine).

A page whose render process died is being reloaded: ``pause()`` holds its pushes (its
coalescer goes on folding), and ``resume()`` once the new page has loaded makes everything
the old page had been given pending again (``UpdateCoalescer.replay``), so the first push
repaints it; ``on_status_shown`` then fires again, as it did for the first status.

After each push has run, ``on_pushed`` is called (the window's reporter then reads back
what the page shows, at its own, lower rate).

Must not: call pywebview or Qt itself (pages do, through ``PageScripts``), block the GUI
thread, or grow without bound.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ipc.messages import Published
from renderer.coalescer import UpdateCoalescer

log = logging.getLogger(__name__)

MAX_UPDATES_PER_SECOND = 30.0
PUSH_TIMEOUT_S = 5.0

# Runs a batch of page jobs: on the GUI thread on Qt, where pages take scripts.
Poster = Callable[[Callable[[], None]], None]
# Called once a pushed script has run (None) or cannot (why).
PushDone = Callable[[BaseException | None], None]


class PageUnavailable(RuntimeError):
    """The page cannot run scripts now: its render process ended, or the window closed."""


class PageScripts(Protocol):
    """A page the scheduler pushes into."""

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]:
        """A job that, run by the scheduler's poster, starts ``script`` in the page and has
        ``done`` called once the page has run it, or cannot. Raises ``PageUnavailable`` at
        once when the page has no render process (it is being reloaded) or is gone."""
        ...


@dataclass(slots=True)
class PushTimings:
    """How long the page took to run each pushed update (ms), for diagnostics."""

    count: int = 0
    last_ms: float = 0.0
    max_ms: float = 0.0
    total_ms: float = 0.0


class PushScheduler:
    """One thread starting every window's pushes; see the module docstring."""

    def __init__(self, poster: Callable[[], Poster] | None = None) -> None:
        """``poster`` makes the function that runs a batch of page jobs (called once, at
        the first push: on Qt it needs the application); None runs them on the
        scheduler's thread."""
        self._make_poster = poster
        self._poster: Poster | None = None
        self.lock = threading.Condition()
        self._bridges: list[Bridge] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="push-scheduler", daemon=True)
        self._thread.start()

    def add(self, bridge: Bridge) -> None:
        with self.lock:
            self._bridges.append(bridge)
            self.lock.notify()

    def remove(self, bridge: Bridge) -> None:
        with self.lock:
            if bridge in self._bridges:
                self._bridges.remove(bridge)

    def wake(self) -> None:
        """Something changed (call with ``lock`` held)."""
        self.lock.notify()

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self.lock.notify()

    def _run(self) -> None:
        while True:
            with self.lock:
                batch = self._wait_for_pushes()
                if batch is None:
                    return
            jobs = []
            for bridge, script, done in batch:
                try:
                    jobs.append(bridge.page.prepare_js(script, done))
                except PageUnavailable as exc:
                    done(exc)
                except Exception as exc:
                    log.exception("preparing an update for a page failed")
                    done(exc)
            if jobs:
                self._post(jobs)

    def _wait_for_pushes(self) -> list[tuple[Bridge, str, PushDone]] | None:
        while True:
            if self._stopping:
                return None
            now = time.monotonic()
            batch = []
            next_due: float | None = None
            for bridge in self._bridges:
                due = bridge.due_at(now)
                if due is None:
                    continue
                if due <= now:
                    batch.append(bridge.take(now))
                elif next_due is None or due < next_due:
                    next_due = due
            if batch:
                return batch
            self.lock.wait(None if next_due is None else next_due - now)

    def _post(self, jobs: list[Callable[[], None]]) -> None:
        def run_all() -> None:
            for job in jobs:
                try:
                    job()
                except Exception:
                    log.exception("starting an update in a page failed")

        if self._poster is None:
            self._poster = self._make_poster() if self._make_poster is not None else _run_now
        self._poster(run_all)


def _run_now(job: Callable[[], None]) -> None:
    job()


class Bridge:
    """Source → coalescer → page, for one window; see the module docstring."""

    def __init__(
        self,
        page: PageScripts,
        scheduler: PushScheduler,
        on_status_shown: Callable[[], None] = lambda: None,
        on_pushed: Callable[[], None] = lambda: None,
        max_rate_hz: float = MAX_UPDATES_PER_SECOND,
        coalescer: UpdateCoalescer | None = None,
    ) -> None:
        self.page = page
        self._scheduler = scheduler
        self._lock = scheduler.lock
        self._on_status_shown = on_status_shown
        self._on_pushed = on_pushed
        self._interval = 1.0 / max_rate_hz
        self.coalescer = coalescer or UpdateCoalescer()
        self.timings = PushTimings()
        self._started = False
        self._stopped = False
        self._paused = False
        self._status_shown = False
        self._in_flight: int | None = None  # the push under way, by number
        self._in_flight_since = 0.0
        self._last_started = float("-inf")
        self._numbers = itertools.count(1)

    # ---- any thread -------------------------------------------------------------------------

    def offer(self, message: Published) -> None:
        """Fold ``message`` into what the next push carries (any thread; never waits long)."""
        with self._lock:
            self.coalescer.add(message)
            self._scheduler.wake()

    def start(self) -> None:
        """Start pushing into the page (what was offered before is pushed first)."""
        with self._lock:
            self._started = True
        self._scheduler.add(self)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._scheduler.remove(self)

    def pause(self) -> None:
        """Hold every push until ``resume`` (the page is being reloaded)."""
        with self._lock:
            self._paused = True

    def resume(self, *, replay: bool) -> None:
        """Push again; with ``replay``, first everything the page had been given."""
        with self._lock:
            if replay:
                self.coalescer.replay()
                self._status_shown = False
            self._paused = False
            self._scheduler.wake()

    # ---- the scheduler's thread, with the lock held -------------------------------------------

    def due_at(self, now: float) -> float | None:
        """When this window can take its next push; None: nothing to push, or not now."""
        if self._in_flight is not None and now - self._in_flight_since > PUSH_TIMEOUT_S:
            log.warning("a page did not run an update within %g s; going on", PUSH_TIMEOUT_S)
            self._in_flight = None
        if (
            not self._started
            or self._stopped
            or self._paused
            or self._in_flight is not None
            or not self.coalescer.pending
        ):
            return None
        return self._last_started + self._interval

    def take(self, now: float) -> tuple[Bridge, str, PushDone]:
        carries_status = self.coalescer.has_status
        script = self.coalescer.take()
        assert script is not None  # due_at said something is pending
        number = next(self._numbers)
        self._in_flight = number
        self._in_flight_since = now
        self._last_started = now

        def done(error: BaseException | None) -> None:
            self._done(number, now, carries_status, error)

        return self, script, done

    # ---- wherever the page says it ran the script (the GUI thread on Qt) ----------------------

    def _done(
        self, number: int, started: float, carries_status: bool, error: BaseException | None
    ) -> None:
        with self._lock:
            if self._in_flight != number:
                return  # given up on already
            self._in_flight = None
            self._scheduler.wake()
            if error is not None:
                if isinstance(error, PageUnavailable):
                    # The page is being reloaded; resume(replay=True) gives it this again.
                    log.info("the page is not there to take an update: %s", error)
                else:
                    log.warning("pushing an update into the page failed: %s", error)
                return
            self._record((time.monotonic() - started) * 1000.0)
            first_status = carries_status and not self._status_shown
            if first_status:
                self._status_shown = True
        if first_status:
            self._on_status_shown()
        self._on_pushed()

    def _record(self, ms: float) -> None:
        t = self.timings
        t.count += 1
        t.last_ms = ms
        t.max_ms = max(t.max_ms, ms)
        t.total_ms += ms
