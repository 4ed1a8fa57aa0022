"""What a window receives from the main process, and how the host learns it is gone.

Owns: the ``UpdateSource`` protocol a window's bridge is fed by (``renderer.ipc_link``'s
``HostSubscription.window_source()`` in the renderer host; ``renderer.demo.DemoFeed``
reads JSON lines in demo mode), and the ``MainProcessGone`` exception the command
sender raises when the other end has vanished.

A source *pushes*: ``attach(sink)`` starts calling ``sink(message)`` from a thread of the
source's own, beginning with the present state (the last ``Status`` and ``Stats``), so a
window that opens late paints the present at its first paint. The sink folds each
message into the window's coalescer, which is cheap and bounded, so a source is never
held up by a slow page.

Updates are the ``ipc.messages`` published types themselves (``Status``, ``Stats``,
``LogLines``, ``ServerEvent``), so the page sees exactly the contract's camelCase field
names and there is no second message vocabulary to keep in step.

Must not: do I/O itself, or know about pywebview.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeAlias

from ipc.messages import Published


class MainProcessGone(ConnectionError):
    """The main process has exited or stopped answering: the windows should close."""


UpdateSink: TypeAlias = Callable[[Published], None]


class UpdateSource(Protocol):
    """Where one window's updates come from; see the module docstring."""

    def attach(self, sink: UpdateSink) -> None:
        """Deliver the present state, then every update, to ``sink`` (once per source).

        Must not deliver a malformed message: drop it, count it, and keep going.
        """
        ...

    def close(self) -> None:
        """Deliver nothing more (the window is closing)."""
        ...
