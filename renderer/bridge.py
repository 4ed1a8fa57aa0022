"""The bridge: moves published messages from a window's feed into its page, at a bounded rate.

Owns two daemon threads per window:

* the *receiver* reads the ``UpdateFeed`` as fast as it delivers and folds each message
  into an ``UpdateCoalescer`` (bounded, so a flood costs CPU, never memory);
* the *pusher* takes the coalesced update and runs it in the page with one
  ``run_js`` call, at most ``max_rate_hz`` times a second. ``run_js`` returns only once the
  page has run the script, so a slow page slows the pusher, not the GUI thread's queue:
  at most one update is ever in flight, and everything newer waits, coalesced.

Splitting reading from pushing keeps the feed drained while the page is busy (a ZeroMQ
subscriber that stops reading would hit its high-water mark and lose state updates that
the coalescer would otherwise have merged).

A page whose render process died is being reloaded: ``pause()`` holds the pusher (the
receiver goes on folding), and ``resume()`` once the new page has loaded makes everything
the old page had been given pending again (``UpdateCoalescer.replay``), so the first push
repaints it; ``on_status_shown`` then fires again, as it did for the first status.

After each push ``on_pushed`` is called (the window's reporter then reads back what the
page shows, at its own, lower rate).

When the feed raises ``MainProcessGone`` the bridge reports it through
``on_main_process_gone`` and stops; the window decides what closing means.

Must not: call pywebview from the receiver, block the GUI thread, or grow without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from renderer.coalescer import UpdateCoalescer
from renderer.feed import MainProcessGone, UpdateFeed

log = logging.getLogger(__name__)

MAX_UPDATES_PER_SECOND = 30.0
# How long one receive waits: only bounds how soon a stopped bridge notices; the feed
# wakes the receiver as soon as a message arrives.
RECEIVE_TIMEOUT_S = 1.0


class PageUnavailable(RuntimeError):
    """The page cannot run scripts now: its render process ended, or the window closed."""


class PageScripts(Protocol):
    """Runs a script in the page and returns once it has run.

    Raises ``PageUnavailable`` when the page has no render process (it is being reloaded)
    or is gone, and ``TimeoutError`` when the page did not answer in time.
    """

    def run_js(self, script: str) -> object: ...


@dataclass(slots=True)
class PushTimings:
    """How long the page took to run each pushed update (ms), for diagnostics."""

    count: int = 0
    last_ms: float = 0.0
    max_ms: float = 0.0
    total_ms: float = 0.0


class Bridge:
    """Feed → coalescer → page, on two threads; see the module docstring."""

    def __init__(
        self,
        feed: UpdateFeed,
        page: PageScripts,
        on_main_process_gone: Callable[[str], None],
        on_status_shown: Callable[[], None] = lambda: None,
        on_pushed: Callable[[], None] = lambda: None,
        max_rate_hz: float = MAX_UPDATES_PER_SECOND,
        coalescer: UpdateCoalescer | None = None,
    ) -> None:
        self._feed = feed
        self._page = page
        self._on_main_process_gone = on_main_process_gone
        self._on_status_shown = on_status_shown
        self._on_pushed = on_pushed
        self._interval = 1.0 / max_rate_hz
        self.coalescer = coalescer or UpdateCoalescer()
        self.timings = PushTimings()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._paused = False
        self._status_shown = False
        self._threads = [
            threading.Thread(target=self._receive_loop, name="bridge-receiver", daemon=True),
            threading.Thread(target=self._push_loop, name="bridge-pusher", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def pause(self) -> None:
        """Hold every push until ``resume`` (the page is being reloaded)."""
        with self._changed:
            self._paused = True

    def resume(self, *, replay: bool) -> None:
        """Push again; with ``replay``, first everything the page had been given."""
        with self._changed:
            if replay:
                self.coalescer.replay()
                self._status_shown = False
            self._paused = False
            self._changed.notify_all()

    def _receive_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._feed.receive(RECEIVE_TIMEOUT_S)
            except MainProcessGone as exc:
                self._on_main_process_gone(f"update feed: {exc}")
                return
            except Exception:
                # A feed bug must not kill the window; back off so it cannot spin.
                log.exception("the update feed failed")
                self._stopping.wait(0.5)
                continue
            if message is None:
                continue
            with self._changed:
                self.coalescer.add(message)
                self._changed.notify()

    def _push_loop(self) -> None:
        while True:
            with self._changed:
                while not self._stopping.is_set() and (self._paused or not self.coalescer.pending):
                    self._changed.wait()
                if self._stopping.is_set():
                    return
                carries_status = self.coalescer.has_status
                script = self.coalescer.take()
            if script is None:
                continue
            started = time.monotonic()
            try:
                self._page.run_js(script)
            except PageUnavailable as exc:
                # The page is being reloaded; resume(replay=True) gives it this again.
                log.info("the page is not there to take an update: %s", exc)
                continue
            except Exception:
                log.exception("pushing an update into the page failed")
            elapsed = time.monotonic() - started
            self._record(elapsed * 1000.0)
            if carries_status and not self._status_shown:
                self._status_shown = True
                self._on_status_shown()
            self._on_pushed()
            # The rate limit: the next push starts no sooner than one interval after this
            # one started. Waiting on the stop event keeps shutdown prompt.
            self._stopping.wait(max(0.0, self._interval - elapsed))

    def _record(self, ms: float) -> None:
        t = self.timings
        t.count += 1
        t.last_ms = ms
        t.max_ms = max(t.max_ms, ms)
        t.total_ms += ms
