"""The renderer host's connection to its main process: one subscription, command senders.

Owns the adapters ``python -m renderer --data-dir D`` builds instead of the demo ones:

* ``HostSubscription``, one per host: ``ipc``'s ``SubscriberThread`` on the status,
  stats, logs and event topics (what the windows show), ``host`` (``HostControl``: how
  many windows the main process has asked this host for; a state topic, so a request
  made while the host was starting reaches it as it subscribes) and ``control``
  (``WindowControl`` diagnostics, handed to the windows they name), ``notice``
  (``TrayNotice``: what the tray should show as its own message, handed to
  ``on_notice``) and ``history`` (``ShippingHistory``, for the windows' chart). Each window
  gets an ``UpdateSource`` of its own from it (``window_source()``; the tray icon gets
  one too): attaching one hands it the present (the last ``Status``, ``Stats`` and
  ``ShippingHistory``, which the subscription got from the main process's Last Value
  Cache and keeps), then every update, each folded straight into the window's coalescer
  on the subscriber's thread. When nothing, not even a heartbeat
  (~1/s), has been heard for ``silence_s`` seconds, ``on_gone`` is called once.
* ``IpcCommandSender`` sends commands on a ``SyncCommandClient``, which is one-thread-only,
  so every call holds a lock (pywebview calls ``js_api`` methods from a thread per call).
  The host shares one among its windows' pages, and another among their reporters.

Why one subscription for the host rather than one per window: measured with eight
windows (``bench/window_latency.py``, two runs each, nothing else changed), a
subscription per window meant eight subscriber threads waking for every update and
contending for one interpreter: publish → page DOM p50 6.4-6.8 ms, p99 21-23 ms, against
3.8-4.0 ms and 15-17 ms with one. What a window's own subscription gave, the present at
its first paint and its own coalescing, each window keeps: the present comes from the
host's copy of the cache, and each window has its own coalescer.

Must not: know about pywebview, decide what the page shows, or call a sink outside its
lock (a window attaching while an update arrives must get the present, then the update,
in that order).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ipc.commands import SyncCommandClient
from ipc.host import connect_subscriber_thread, connect_sync_client
from ipc.messages import (
    TOPIC_EVENT,
    TOPIC_HISTORY,
    TOPIC_HOST,
    TOPIC_LOGS,
    TOPIC_NOTICE,
    TOPIC_STATS,
    TOPIC_STATUS,
    TOPIC_WINDOW_CONTROL,
    Command,
    HostControl,
    Reply,
    ShippingHistory,
    Stats,
    Status,
    TrayNotice,
    WindowControl,
)
from ipc.subscriber import Delivery, SubscriberThread
from renderer.feed import UpdateSink

log = logging.getLogger(__name__)

# Control topics first: once the status's cached value has arrived, the publisher has
# taken every subscription before it (they travel in order on one connection).
HOST_TOPICS = (
    TOPIC_HOST,
    TOPIC_WINDOW_CONTROL,
    TOPIC_NOTICE,
    TOPIC_HISTORY,
    TOPIC_STATUS,
    TOPIC_STATS,
    TOPIC_LOGS,
    TOPIC_EVENT,
)
# The publisher's heartbeat comes every second; several missed in a row means the main
# process is gone (or hung so badly that the windows can show nothing true).
DEFAULT_SILENCE_S = 5.0


class HostSubscription:
    """The host's one subscription, fanned out to its windows; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        *,
        on_open_requests: Callable[[int], None],
        on_control: Callable[[WindowControl], None],
        on_gone: Callable[[str], None],
        on_notice: Callable[[TrayNotice], None] = lambda notice: None,
        silence_s: float = DEFAULT_SILENCE_S,
        pid: int | None = None,
    ) -> None:
        self._on_open_requests = on_open_requests
        self._on_control = on_control
        self._on_gone = on_gone
        self._on_notice = on_notice
        self._silence_s = silence_s
        self._pid = os.getpid() if pid is None else pid
        self._lock = threading.Lock()
        self._sinks: dict[int, UpdateSink] = {}
        self._status: Status | None = None
        self._stats: Stats | None = None
        self._history: ShippingHistory | None = None
        self._started_at = time.monotonic()
        self._stopping = threading.Event()
        self._subscriber: SubscriberThread = connect_subscriber_thread(
            data_dir, self._deliver, HOST_TOPICS
        )
        self._watch = threading.Thread(target=self._watch_silence, name="silence", daemon=True)

    def start(self) -> None:
        self._subscriber.start()
        self._watch.start()

    def window_source(self) -> WindowSource:
        """An ``UpdateSource`` for one more window."""
        return WindowSource(self)

    # ---- the subscriber's thread ---------------------------------------------------------

    def _deliver(self, delivery: Delivery) -> None:
        message = delivery.message
        if isinstance(message, HostControl):
            if message.host == self._pid:
                self._on_open_requests(message.open_requests)
            return
        if isinstance(message, WindowControl):
            self._on_control(message)
            return
        if isinstance(message, TrayNotice):
            if message.host == self._pid:
                self._on_notice(message)
            return
        with self._lock:
            if isinstance(message, Status):
                self._status = message
            elif isinstance(message, Stats):
                self._stats = message
            elif isinstance(message, ShippingHistory):
                self._history = message
            for sink in self._sinks.values():
                sink(message)

    # ---- windows -------------------------------------------------------------------------

    def _attach(self, key: int, sink: UpdateSink) -> None:
        with self._lock:
            for present in (self._status, self._stats, self._history):
                if present is not None:
                    sink(present)
            self._sinks[key] = sink

    def _detach(self, key: int) -> None:
        with self._lock:
            self._sinks.pop(key, None)

    # ---- the main process's silence --------------------------------------------------------

    def silent_for(self) -> float:
        """Seconds since the main process was last heard (or since the subscription began)."""
        heard = self._subscriber.last_heard
        return time.monotonic() - (self._started_at if heard is None else heard)

    def _watch_silence(self) -> None:
        # Wakes once a second: an idle host should wake rarely, and the silence bound is
        # several seconds anyway.
        while not self._stopping.wait(1.0):
            silent = self.silent_for()
            if silent > self._silence_s:
                self._on_gone(f"nothing heard from the main process for {silent:.1f} s")
                return

    def close(self) -> None:
        self._stopping.set()
        self._subscriber.stop(timeout=2.0)


class WindowSource:
    """One window's ``UpdateSource`` on the host's subscription."""

    def __init__(self, subscription: HostSubscription) -> None:
        self._subscription = subscription

    def attach(self, sink: UpdateSink) -> None:
        self._subscription._attach(id(self), sink)

    def close(self) -> None:
        self._subscription._detach(id(self))


class IpcCommandSender:
    """``CommandSender`` over one ``SyncCommandClient``, serialised by a lock."""

    def __init__(self, data_dir: Path) -> None:
        self._client: SyncCommandClient = connect_sync_client(data_dir)
        self._lock = threading.Lock()

    def send(self, command: Command, timeout: float) -> Reply:
        # CommandTimeoutError is a TimeoutError: PageApi tells the page "no answer".
        with self._lock:
            return self._client.request(command, timeout=timeout)

    def close(self) -> None:
        with self._lock:
            self._client.close()
