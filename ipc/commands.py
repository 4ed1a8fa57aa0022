"""The command channel: viewers ask, the main process answers. DEALER → ROUTER.

Owns: the request framing, the ``CommandServer`` loop that decodes requests and runs the
main process's handler, and the clients that send a command and wait for its reply
(``CommandClient`` for asyncio, ``SyncCommandClient`` for a CLI or a window's thread).

Frames, client → server: ``[request id, body]`` (the ROUTER prepends the peer identity).
Server → client: ``[request id, body]``. The request id (1 to 64 bytes, chosen by the
client; ours is an 8-byte counter) pairs a reply with its request, so one client can have
many requests in flight and a reply that comes after its timeout is recognised and
dropped. Bodies are msgpack ``Command``/``Reply`` messages (``ipc/messages.py``).

What the server does with what a peer sends (nothing can raise out of its loop):

* a frame over ``MAX_COMMAND_BYTES``: libzmq disconnects the peer before reading it (see
  ``endpoints.limit_inbound``); at most ``COMMAND_RECEIVE_HWM`` requests are queued per
  peer, so one that floods holds a bounded amount of memory;
* fewer than two frames, or a request id that is empty or over 64 bytes: there is
  nothing to address a reply to, so it is dropped and counted (``dropped``);
* more than two frames, or a body that is not a valid ``Command`` (bad msgpack, unknown
  tag, missing field, wrong field type): ``Failed(code="invalid", message=<msgspec's
  error text>)``;
* ``Ping`` is answered here; ``Snapshot`` and ``GetStatus`` are answered from the
  publisher's cache when a publisher is attached, so they work while the handler is busy;
* anything else goes to the handler in its own task (a slow ``Login`` does not hold up
  other requests); a handler that raises gets ``Failed(code="internal")`` and the loop
  goes on; more than ``max_in_flight`` handler tasks at once gets ``Failed("busy")``.

A reply over ``MAX_PUBLISHED_BYTES`` (the most a viewer's socket takes) is replaced by
``Failed(code="too_large")``: sent as it is, it would get the viewer disconnected. A
client does not send a request over ``MAX_COMMAND_BYTES`` (the server would disconnect
it, and the request would only time out): it answers ``Failed(code="too_large")`` itself.

Why a ROUTER answering from tasks is safe: every send happens on the loop's thread, and
a ROUTER never blocks a send (a reply to a peer that has gone is silently dropped).

Must not: interpret commands (the handler does) or publish anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, cast

import msgspec
import zmq
import zmq.asyncio

from ipc.endpoints import (
    COMMAND_RECEIVE_HWM,
    MAX_COMMAND_BYTES,
    MAX_PUBLISHED_BYTES,
    CurveKeys,
    limit_inbound,
)
from ipc.messages import (
    COMMAND_DECODER,
    DECODE_ERRORS,
    REPLY_DECODER,
    REPLY_TYPES,
    TOPIC_STATUS,
    Command,
    Failed,
    GetStatus,
    Ok,
    Ping,
    Reply,
    Snapshot,
    Status,
    encode,
)
from ipc.publisher import StatusPublisher

logger = logging.getLogger(__name__)

MAX_REQUEST_ID: Final = 64
CommandHandler = Callable[[Command], Awaitable[Reply]]


class CommandTimeoutError(TimeoutError):
    """No reply came in time; the message names the command and the endpoint."""


class ReplyError(RuntimeError):
    """A reply arrived for our request but could not be decoded."""


@dataclass(slots=True)
class CommandServerCounters:
    received: int = 0
    answered: int = 0
    invalid: int = 0
    dropped: int = 0
    handler_errors: int = 0
    busy: int = 0
    send_failures: int = 0
    too_large: int = 0


class CommandServer:
    """A ROUTER socket that answers ``Command``s with ``Reply``s via an async handler."""

    def __init__(
        self,
        endpoint: str,
        handler: CommandHandler,
        *,
        publisher: StatusPublisher | None = None,
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
        max_in_flight: int = 64,
    ) -> None:
        self._bind_address = endpoint
        self._handler = handler
        self._publisher = publisher
        self._context = context or zmq.asyncio.Context.instance()
        self._curve = curve
        self._max_in_flight = max_in_flight
        self._socket: zmq.asyncio.Socket | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.endpoint = endpoint
        self.counters = CommandServerCounters()

    async def start(self) -> Self:
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        limit_inbound(socket, MAX_COMMAND_BYTES)
        socket.setsockopt(zmq.RCVHWM, COMMAND_RECEIVE_HWM)
        if self._curve is not None:
            self._curve.configure_server(socket)
        try:
            socket.bind(self._bind_address)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._socket = socket
        self._loop_task = asyncio.create_task(self._serve(), name="ipc-command-server")
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop_task = None
        self._tasks.clear()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    async def _serve(self) -> None:
        assert self._socket is not None
        socket = self._socket
        while True:
            try:
                frames = await socket.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as error:
                if error.errno == zmq.ENOTSOCK:
                    return
                logger.warning("ipc command server: receive failed: %s", error)
                continue
            try:
                self._on_request(frames)
            except Exception:  # nothing a peer sends may end the loop
                self.counters.dropped += 1
                logger.exception("ipc command server: request could not be handled")

    def _on_request(self, frames: list[bytes]) -> None:
        self.counters.received += 1
        # frames[0] is the peer identity the ROUTER added.
        if len(frames) < 3 or not 0 < len(frames[1]) <= MAX_REQUEST_ID:
            self.counters.dropped += 1
            return
        identity, request_id = frames[0], frames[1]
        if len(frames) != 3:
            self._invalid(
                identity, request_id, f"Expected 2 frames [request id, body], got {len(frames) - 1}"
            )
            return
        try:
            command = COMMAND_DECODER.decode(frames[2])
        except DECODE_ERRORS as error:
            self._invalid(identity, request_id, str(error))
            return
        immediate = self._answer_here(command)
        if immediate is not None:
            self._reply(identity, request_id, immediate)
            return
        if len(self._tasks) >= self._max_in_flight:
            self.counters.busy += 1
            self._reply(
                identity, request_id, Failed(code="busy", message="Too many requests in flight")
            )
            return
        task = asyncio.create_task(self._run_handler(identity, request_id, command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer_here(self, command: Command) -> Reply | None:
        if isinstance(command, Ping):
            return Ok()
        if self._publisher is None:
            return None
        if isinstance(command, Snapshot):
            return self._publisher.snapshot()
        if isinstance(command, GetStatus):
            status = self._publisher.cached(TOPIC_STATUS)
            if not isinstance(status, Status):
                return Failed(code="unavailable", message="No status has been published yet")
            return Ok(data=msgspec.to_builtins(status))
        return None

    async def _run_handler(self, identity: bytes, request_id: bytes, command: Command) -> None:
        try:
            reply = await self._handler(command)
            if not isinstance(reply, REPLY_TYPES):
                raise TypeError(f"handler returned {type(reply).__name__}, not a Reply")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.counters.handler_errors += 1
            # repr(command) is safe to log: Login hides its password.
            logger.exception("ipc command handler failed on %r", command)
            reply = Failed(code="internal", message=f"{type(error).__name__}: {error}")
        self._reply(identity, request_id, reply)

    def _invalid(self, identity: bytes, request_id: bytes, message: str) -> None:
        self.counters.invalid += 1
        self._reply(identity, request_id, Failed(code="invalid", message=message))

    def _reply(self, identity: bytes, request_id: bytes, reply: Reply) -> None:
        if self._socket is None:
            return
        body = encode(reply)
        if len(body) > MAX_PUBLISHED_BYTES:
            self.counters.too_large += 1
            logger.warning(
                "ipc command server: a %s reply of %d bytes is over the %d-byte limit",
                type(reply).__name__,
                len(body),
                MAX_PUBLISHED_BYTES,
            )
            body = encode(too_large("reply", len(body), MAX_PUBLISHED_BYTES))
        sent = cast(
            "asyncio.Future[object]",
            self._socket.send_multipart((identity, request_id, body), flags=zmq.DONTWAIT),
        )
        if sent.done() and sent.exception() is not None:
            self.counters.send_failures += 1
        else:
            self.counters.answered += 1


# ----------------------------------------------------------------------------- clients


def _describe(command: Command) -> str:
    return type(command).__name__


def too_large(what: str, size: int, limit: int) -> Failed:
    """The reply for a request or reply too large for the ipc sockets."""
    return Failed(
        code="too_large",
        message=f"The {what} of {size:,} bytes is over the ipc limit of {limit:,} bytes",
    )


def _oversize_request(command: Command, body: bytes) -> Failed | None:
    if len(body) <= MAX_COMMAND_BYTES:
        return None
    return too_large(f"{_describe(command)} request", len(body), MAX_COMMAND_BYTES)


class CommandClient:
    """An asyncio DEALER: ``await request(command, timeout=...)`` returns the ``Reply``.

    Many requests may be in flight; replies are paired by request id in a reader task.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._context = context or zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        limit_inbound(self._socket, MAX_PUBLISHED_BYTES)
        if curve is not None:
            curve.configure_client(self._socket)
        self._socket.connect(endpoint)
        self._ids = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future[Reply]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.late_replies = 0
        self.malformed_replies = 0

    async def request(self, command: Command, *, timeout: float = 5.0) -> Reply:
        """Send ``command``; return its reply or raise ``CommandTimeoutError``."""
        body = encode(command)
        refused = _oversize_request(command, body)
        if refused is not None:
            return refused
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_replies(), name="ipc-command-client")
        request_id = next(self._ids).to_bytes(8, "big")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._socket.send_multipart((request_id, body))
                return await future
        except TimeoutError:
            raise CommandTimeoutError(
                f"No reply to {_describe(command)} from {self.endpoint} within {timeout:g} s "
                "(is the log-monitor main process running?)"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _read_replies(self) -> None:
        while True:
            try:
                frames = await self._socket.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError:
                return
            future = self._pending.get(frames[0]) if len(frames) == 2 else None
            if future is None or future.done():
                self.late_replies += 1
                continue
            try:
                future.set_result(REPLY_DECODER.decode(frames[1]))
            except DECODE_ERRORS as error:
                self.malformed_replies += 1
                future.set_exception(ReplyError(f"Malformed reply from {self.endpoint}: {error}"))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for future in self._pending.values():
            future.cancel()
        self._socket.close(linger=0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class SyncCommandClient:
    """A blocking DEALER for a CLI or a thread: one request at a time, one thread only."""

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        # A plain (not asyncio) context: this client may be used with no loop at all.
        self._owns_context = context is None
        self._context: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        limit_inbound(self._socket, MAX_PUBLISHED_BYTES)
        if curve is not None:
            curve.configure_client(self._socket)
        self._socket.connect(endpoint)
        self._ids = itertools.count(1)
        self.late_replies = 0

    def request(self, command: Command, *, timeout: float = 5.0) -> Reply:
        """Send ``command``; return its reply or raise ``CommandTimeoutError``."""
        body = encode(command)
        refused = _oversize_request(command, body)
        if refused is not None:
            return refused
        request_id = next(self._ids).to_bytes(8, "big")
        deadline = time.monotonic() + timeout
        try:
            # DEALER queues while connecting; DONTWAIT only fails if that queue is full.
            self._socket.send_multipart((request_id, body), flags=zmq.DONTWAIT)
        except zmq.Again:
            raise CommandTimeoutError(
                f"Cannot queue {_describe(command)} for {self.endpoint}"
            ) from None
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._socket.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                continue
            frames = self._socket.recv_multipart()
            if len(frames) != 2 or frames[0] != request_id:
                self.late_replies += 1
                continue
            try:
                return REPLY_DECODER.decode(frames[1])
            except DECODE_ERRORS as error:
                raise ReplyError(f"Malformed reply from {self.endpoint}: {error}") from error
        raise CommandTimeoutError(
            f"No reply to {_describe(command)} from {self.endpoint} within {timeout:g} s "
            "(is the log-monitor main process running?)"
        )

    def close(self) -> None:
        self._socket.close(linger=0)
        if self._owns_context:
            self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
