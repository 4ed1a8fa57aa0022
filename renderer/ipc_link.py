"""The renderer host's connection to its main process: feeds, command senders, host link.

Owns the adapters ``python -m renderer --data-dir D`` builds instead of the demo ones:

* ``IpcFeed``, one per window: ``ipc``'s ``SubscriberThread`` on the status, stats, logs
  and event topics, its own subscription, so each window is an independent viewer and a
  window opened late gets the Last Value Cache's present status as it subscribes.
  Published messages go to the window's bridge through a bounded queue. ``receive``
  raises ``MainProcessGone`` once nothing, not even a heartbeat (~1/s), has been heard for
  ``silence_s`` seconds.
* ``IpcCommandSender`` sends commands on a ``SyncCommandClient``, which is one-thread-only,
  so every call holds a lock (pywebview calls ``js_api`` methods from a thread per call).
  The host shares one among its windows' pages, and another among their reporters.
* ``HostLink``, one per host: its own subscription to ``host`` (``HostControl``: how many
  windows the main process has asked this host for) and ``control`` (``WindowControl``
  diagnostics, handed to the windows they name). ``HostControl`` is a state topic, so a
  request made while the host was still starting reaches it as it subscribes.

A window's subscription starts when the window is asked for, before its page loads, so
the cached status is already waiting when the page has loaded: the first status the page
paints is the present one.

Must not: know about pywebview, or decide what the page shows.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ipc.commands import SyncCommandClient
from ipc.host import connect_subscriber_thread, connect_sync_client
from ipc.messages import (
    TOPIC_EVENT,
    TOPIC_HOST,
    TOPIC_LOGS,
    TOPIC_STATS,
    TOPIC_STATUS,
    TOPIC_WINDOW_CONTROL,
    Command,
    HostControl,
    LogLines,
    Published,
    Reply,
    ServerEvent,
    WindowControl,
)
from ipc.subscriber import Delivery, SubscriberThread
from renderer.feed import MainProcessGone

log = logging.getLogger(__name__)

WINDOW_TOPICS = (TOPIC_STATUS, TOPIC_STATS, TOPIC_LOGS, TOPIC_EVENT)
HOST_TOPICS = (TOPIC_HOST, TOPIC_WINDOW_CONTROL)
# The publisher's heartbeat comes every second; several missed in a row means the main
# process is gone (or hung so badly that this window can show nothing true).
DEFAULT_SILENCE_S = 5.0
QUEUE_SIZE = 2048
# How long a state message may wait for room in a full queue before it is dropped (the
# bridge drains the queue continuously, so this only happens if the window is stuck).
STATE_PUT_TIMEOUT_S = 1.0


class IpcFeed:
    """``UpdateFeed`` over ``ipc``'s subscriber thread; see the module docstring."""

    def __init__(self, data_dir: Path, silence_s: float = DEFAULT_SILENCE_S) -> None:
        self._silence_s = silence_s
        self._queue: queue.Queue[Published] = queue.Queue(QUEUE_SIZE)
        self._closed = threading.Event()
        self._started_at = time.monotonic()
        self.dropped = 0
        self._subscriber: SubscriberThread = connect_subscriber_thread(
            data_dir, self._deliver, WINDOW_TOPICS
        )
        self._subscriber.start()

    def _deliver(self, delivery: Delivery) -> None:
        message = delivery.message
        try:
            self._queue.put_nowait(message)
            return
        except queue.Full:
            pass
        if isinstance(message, LogLines | ServerEvent):
            # Streams: the page could only show the newest anyway; count and move on.
            self.dropped += 1
            return
        try:
            self._queue.put(message, timeout=STATE_PUT_TIMEOUT_S)
        except queue.Full:
            self.dropped += 1
            log.warning("the window is not taking updates; dropped a %s", type(message).__name__)

    def silent_for(self) -> float:
        """Seconds since the main process was last heard (or since the feed started)."""
        heard = self._subscriber.last_heard
        return time.monotonic() - (self._started_at if heard is None else heard)

    def receive(self, timeout: float) -> Published | None:
        if self._closed.is_set():
            raise MainProcessGone("the feed is closed")
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            pass
        silent = self.silent_for()
        if silent > self._silence_s:
            raise MainProcessGone(f"nothing heard from the main process for {silent:.1f} s")
        return None

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._subscriber.stop(timeout=2.0)


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


class HostLink:
    """The host's own subscription: ``HostControl`` and ``WindowControl``; see the module."""

    def __init__(
        self,
        data_dir: Path,
        on_open_requests: Callable[[int], None],
        on_control: Callable[[WindowControl], None],
        pid: int | None = None,
    ) -> None:
        self._on_open_requests = on_open_requests
        self._on_control = on_control
        self._pid = os.getpid() if pid is None else pid
        self._subscriber: SubscriberThread = connect_subscriber_thread(
            data_dir, self._deliver, HOST_TOPICS
        )

    def start(self) -> None:
        self._subscriber.start()

    def _deliver(self, delivery: Delivery) -> None:
        message = delivery.message
        if isinstance(message, HostControl):
            if message.host == self._pid:
                self._on_open_requests(message.open_requests)
        elif isinstance(message, WindowControl):
            self._on_control(message)

    def close(self) -> None:
        self._subscriber.stop(timeout=2.0)
