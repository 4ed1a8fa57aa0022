"""A window's connection to its main process: the ipc ``UpdateFeed`` and ``CommandSender``.

Owns the two adapters ``python -m renderer --data-dir D`` builds instead of the demo ones:

* ``IpcFeed`` runs ``ipc``'s ``SubscriberThread`` on the status, stats, logs, event and
  window-control topics. Published messages go to the bridge through a bounded queue;
  ``WindowControl`` requests meant for this window go to ``on_control`` instead (the
  window's reporter answers them). ``receive`` raises ``MainProcessGone`` once nothing,
  not even a heartbeat (~1/s), has been heard for ``silence_s`` seconds.
* ``IpcCommandSender`` sends commands on a ``SyncCommandClient``, which is one-thread-only,
  so every call holds a lock (pywebview calls ``js_api`` methods from a thread per call).

The subscription starts when the window process starts, before pywebview is even
imported, so the Last Value Cache's status is already waiting when the page has loaded:
the first status the page paints is the present one.

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
    TOPIC_LOGS,
    TOPIC_STATS,
    TOPIC_STATUS,
    TOPIC_WINDOW_CONTROL,
    Command,
    LogLines,
    Published,
    Reply,
    ServerEvent,
    WindowControl,
)
from ipc.subscriber import Delivery, SubscriberThread
from renderer.feed import MainProcessGone

log = logging.getLogger(__name__)

WINDOW_TOPICS = (TOPIC_STATUS, TOPIC_STATS, TOPIC_LOGS, TOPIC_EVENT, TOPIC_WINDOW_CONTROL)
# The publisher's heartbeat comes every second; several missed in a row means the main
# process is gone (or hung so badly that this window can show nothing true).
DEFAULT_SILENCE_S = 5.0
QUEUE_SIZE = 2048
# How long a state message may wait for room in a full queue before it is dropped (the
# bridge drains the queue continuously, so this only happens if the window is stuck).
STATE_PUT_TIMEOUT_S = 1.0


class IpcFeed:
    """``UpdateFeed`` over ``ipc``'s subscriber thread; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        on_control: Callable[[WindowControl], None],
        silence_s: float = DEFAULT_SILENCE_S,
        pid: int | None = None,
    ) -> None:
        self._on_control = on_control
        self._silence_s = silence_s
        self._pid = os.getpid() if pid is None else pid
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
        if isinstance(message, WindowControl):
            if not message.pids or self._pid in message.pids:
                self._on_control(message)
            return
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
