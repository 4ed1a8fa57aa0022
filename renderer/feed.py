"""What a window receives from the main process, and how it learns the main process is gone.

Owns: the ``UpdateFeed`` protocol the bridge reads (``renderer.ipc_link.IpcFeed`` over
``ipc``'s thread subscriber; ``renderer.demo.DemoFeed`` reads JSON lines in demo mode), and the ``MainProcessGone``
exception both the feed and the command sender raise when the other end has vanished.

Updates are the ``ipc.messages`` published types themselves (``Status``, ``Stats``,
``LogLines``, ``ServerEvent``, ``WindowState``), so the page sees exactly the contract's
camelCase field names and there is no second message vocabulary to keep in step.

Must not: do I/O itself, or know about pywebview.
"""

from __future__ import annotations

from typing import Protocol

from ipc.messages import Published


class MainProcessGone(ConnectionError):
    """The main process has exited or stopped answering: this window should close."""


class UpdateFeed(Protocol):
    """A source of published messages, read by one thread (the bridge's receiver)."""

    def receive(self, timeout: float) -> Published | None:
        """The next message, or ``None`` if none arrived within ``timeout`` seconds.

        Raises ``MainProcessGone`` once the main process is known to be gone (its sockets
        closed, a heartbeat overdue, or, in the demo feed, end of input). Must not raise
        for a malformed message: drop it, count it, and keep going.
        """
        ...

    def close(self) -> None:
        """Release the feed's resources; ``receive`` may then raise ``MainProcessGone``."""
        ...
