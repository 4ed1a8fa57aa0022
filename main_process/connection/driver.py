"""The connection's driver: one asyncio task that feeds ``ConnectionState`` its events
and executes the actions it returns, in order.

Owns: the event queue, the driver task, and the connection's background tasks (socket
opens and closes, HTTP refreshes, awaitable callbacks), so that closing the connection
can wait for them or cancel them.

Must not: know what an action does in the world. ``ServerConnection`` hands in
``execute_one``, which performs one action and returns what the machine said in answer
(a ``LoadChunks`` is answered at once, inline).

How it runs. Everything that happens (a socket event, an ack, an HTTP answer, a public
method call) becomes an ``Event`` on one queue. The task takes events off the queue,
hands each to the machine with the monotonic time, executes the returned actions one
after another (depth first: what the machine answered to an action comes before the
next action), and sleeps until the next event or the machine's next deadline, whichever
comes first. A bug costs one event, not the connection: it is logged and the task goes
on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from main_process.connection.state import (
    AckReceived,
    Action,
    ChunksAppended,
    ConnectionState,
    EnsureConnected,
    Event,
    MalformedPayload,
    ServerActivity,
    UnknownServerEvent,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _QueuedEvent:
    event: Event
    done: asyncio.Future[None] | None = None


class MachineDriver:
    """Runs a ``ConnectionState``; see the module docstring."""

    def __init__(
        self,
        machine: ConnectionState,
        clock: Callable[[], float],
        execute_one: Callable[[Action], Awaitable[list[Action]]],
    ) -> None:
        self._machine = machine
        self._clock = clock
        self._execute_one = execute_one
        self._queue: asyncio.Queue[_QueuedEvent] | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stopped = False

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Start the driver task. Needs a running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._drive(), name="server-connection-driver")

    async def stop(self) -> None:
        """Stop the task; events fed from then on are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._stopped = True

    async def submit(self, event: Event) -> None:
        """Queue ``event`` and wait until the driver has handled it."""
        assert self._queue is not None
        if asyncio.current_task() is self._task:
            # Called from a callback the driver is running (e.g. the status callback):
            # waiting for the driver here would wait for ourselves.
            self._queue.put_nowait(_QueuedEvent(event))
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_QueuedEvent(event, done))
        await done

    def feed(self, event: Event) -> None:
        """Queue ``event`` from a callback; the driver handles it soon."""
        if self._queue is not None and not self._stopped:
            self._queue.put_nowait(_QueuedEvent(event))

    # ------------------------------------------------------------------ background tasks

    def spawn(self, coroutine: Awaitable[None], name: str) -> None:
        """Run ``coroutine`` as a background task; a failure is logged, not raised."""

        async def run() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s failed", name)

        task = asyncio.create_task(run(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_for(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` for the background tasks called ``name``; whether any ran."""
        tasks = [t for t in self._background if t.get_name() == name]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return bool(tasks)

    async def finish_background(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every background task, then cancel what is left."""
        if self._background:
            _, pending = await asyncio.wait(list(self._background), timeout=timeout)
            for task in pending:
                task.cancel()

    # ------------------------------------------------------------------ the loop

    async def _drive(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            deadline = self._machine.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            item: _QueuedEvent | None
            try:
                # Events already queued first: a deadline in the past must not starve them.
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    item = None
            try:
                now = self._clock()
                actions: list[Action] = []
                if item is not None:
                    _log_event(item.event)
                    actions += self._machine.handle(item.event, now)
                actions += self._machine.tick(now)
                await self._execute(actions)
            except Exception:
                # A bug must cost one event, not the connection: keep driving.
                logger.exception("handling %r failed", item.event if item else "a tick")
            finally:
                if item is not None and item.done is not None and not item.done.done():
                    item.done.set_result(None)

    async def _execute(self, actions: list[Action]) -> None:
        todo: deque[Action] = deque(actions)
        while todo:
            action = todo.popleft()
            try:
                more = await self._execute_one(action)
            except Exception:
                logger.exception("executing %s failed", type(action).__name__)
                continue
            # Depth first: what the machine said in answer to this action comes next.
            todo.extendleft(reversed(more))


def _log_event(event: Event) -> None:
    # One line per event; the dataclass reprs of events hide every token.
    match event:
        case AckReceived(error=None) | ServerActivity() | ChunksAppended() | EnsureConnected():
            logger.debug("%r", event)
        case UnknownServerEvent() | MalformedPayload():
            logger.warning("%r ignored", event)
        case _:
            logger.info("%r", event)
