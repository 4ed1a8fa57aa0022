"""The one polling wait that tests and benchmarks use: poll a predicate until it holds or
a deadline passes (for what has no event to wait on: a file's size, a process's state)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.02,
    error: type[Exception] = TimeoutError,
) -> float:
    """Poll ``predicate`` until it is true; the seconds it took. At the deadline raise
    ``error`` saying ``what`` was awaited."""
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


async def wait_until_async(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.01
) -> float:
    """``wait_until`` for a test running on an event loop: the loop keeps running."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
    return loop.time() - start
