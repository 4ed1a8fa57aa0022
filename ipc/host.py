"""Wiring of the main process's IPC and of a viewer's connection to it, per data directory.

Owns: putting endpoints, publisher, command server and (on TCP) the CURVE allow-list
together in the right order, and the matching ``connect_*`` helpers viewers use.

Order matters: take the ``InstanceLock`` first (the caller does), then ``IpcHost.start``
binds (which would otherwise replace a running instance's socket files), secures the
socket files, and only then saves ``endpoints.json``, so a viewer that finds the file
finds sockets it is allowed to use.

Must not: decide anything about commands (the handler passed in does).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from ipc.commands import CommandClient, CommandHandler, CommandServer, SyncCommandClient
from ipc.endpoints import Endpoints, Transport
from ipc.messages import ALL_TOPICS
from ipc.publisher import StatusPublisher
from ipc.subscriber import Delivery, Subscriber, SubscriberThread


class IpcHost:
    """The main process's publisher and command server for one data directory.

    ::

        lock = InstanceLock(data_dir)
        if not lock.acquire():
            ask_primary_to_open_window(data_dir)
            return 0
        async with IpcHost(data_dir, handler) as host:
            host.publisher.publish(Status(state="connecting", ...))
            ...
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        handler: CommandHandler,
        *,
        transport: Transport | None = None,
        runtime_base: Path | None = None,
        context: zmq.asyncio.Context | None = None,
        send_hwm: int = 1000,
        heartbeat_interval: float | None = 1.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._context = context or zmq.asyncio.Context.instance()
        self.endpoints = Endpoints.for_binding(data_dir, transport=transport, base=runtime_base)
        curve = self.endpoints.curve
        self._authenticator: AsyncioAuthenticator | None = None
        self.publisher = StatusPublisher(
            self.endpoints.publisher,
            context=self._context,
            curve=curve,
            send_hwm=send_hwm,
            heartbeat_interval=heartbeat_interval,
        )
        self.commands = CommandServer(
            self.endpoints.commands,
            handler,
            publisher=self.publisher,
            context=self._context,
            curve=curve,
        )

    async def start(self) -> Self:
        curve = self.endpoints.curve
        if curve is not None:
            # ZAP allow-list: only the client key kept in our private directory may
            # connect, not any CURVE client that learnt the server's public key.
            self._authenticator = AsyncioAuthenticator(self._context)
            self._authenticator.start()
            self._authenticator.configure_curve(domain="*", location=str(curve.clients_dir))
        await self.publisher.start()
        await self.commands.start()
        self.endpoints = self.endpoints.bound(self.publisher.endpoint, self.commands.endpoint)
        self.endpoints.secure_socket_files()
        self.endpoints.save()
        return self

    async def close(self) -> None:
        self.endpoints.remove_saved()
        await self.commands.close()
        await self.publisher.close()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def connect_subscriber(
    data_dir: str | os.PathLike[str],
    topics: Iterable[bytes] = ALL_TOPICS,
    *,
    runtime_base: Path | None = None,
) -> Subscriber:
    """An asyncio ``Subscriber`` to the running main process of ``data_dir``."""
    endpoints = Endpoints.discover(data_dir, base=runtime_base)
    return Subscriber(endpoints.publisher, endpoints.commands, topics, curve=endpoints.curve)


def connect_subscriber_thread(
    data_dir: str | os.PathLike[str],
    callback: Callable[[Delivery], None],
    topics: Iterable[bytes] = ALL_TOPICS,
    *,
    runtime_base: Path | None = None,
) -> SubscriberThread:
    """A ``SubscriberThread`` (not yet started) to the main process of ``data_dir``."""
    endpoints = Endpoints.discover(data_dir, base=runtime_base)
    return SubscriberThread(
        endpoints.publisher, endpoints.commands, callback, topics, curve=endpoints.curve
    )


def connect_client(
    data_dir: str | os.PathLike[str], *, runtime_base: Path | None = None
) -> CommandClient:
    """An asyncio ``CommandClient`` to the main process of ``data_dir``."""
    endpoints = Endpoints.discover(data_dir, base=runtime_base)
    return CommandClient(endpoints.commands, curve=endpoints.curve)


def connect_sync_client(
    data_dir: str | os.PathLike[str], *, runtime_base: Path | None = None
) -> SyncCommandClient:
    """A blocking ``SyncCommandClient`` (CLI, threads) to the main process of ``data_dir``."""
    endpoints = Endpoints.discover(data_dir, base=runtime_base)
    return SyncCommandClient(endpoints.commands, curve=endpoints.curve)
