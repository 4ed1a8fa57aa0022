"""Shared pieces of the ipc tests: a running host on a short private path, a recording
handler, and waiting for a delivery with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from ipc.commands import CommandHandler
from ipc.host import IpcHost
from ipc.messages import Command, Ok, Reply
from ipc.subscriber import Delivery, Subscriber


class RecordingHandler:
    """A command handler that remembers what it was asked and answers ``Ok``."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    async def __call__(self, command: Command) -> Reply:
        self.commands.append(command)
        return Ok(data={"handled": type(command).__name__})


@contextmanager
def short_dir(prefix: str = "lm") -> Iterator[Path]:
    """A fresh directory with a short path (Unix socket paths are limited to ~103 bytes;
    pytest's tmp_path can be longer than that with a long test name)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_host(
    handler: CommandHandler | None = None, **options: Any
) -> AsyncIterator[IpcHost]:
    """A started ``IpcHost`` whose data dir and runtime base are fresh short directories."""
    with short_dir() as root:
        host = IpcHost(
            root / "data", handler or RecordingHandler(), runtime_base=root / "run", **options
        )
        async with host:
            yield host


async def next_delivery(subscriber: Subscriber, timeout: float = 5.0) -> Delivery:
    async with asyncio.timeout(timeout):
        return await anext(subscriber)


async def deliveries_until(
    subscriber: Subscriber, done: Callable[[Delivery], bool], timeout: float = 10.0
) -> list[Delivery]:
    """Deliveries until ``done(delivery)`` is true (that one included), with a deadline."""
    received: list[Delivery] = []
    async with asyncio.timeout(timeout):
        async for delivery in subscriber:
            received.append(delivery)
            if done(delivery):
                return received
    raise AssertionError("subscriber ended")
