"""What the main process sees of a source of lines: the followed files (``SourceSet``)
and a stream such as standard input (``text_feed.TextFeed``) alike.

Owns: the ``LineSource`` interface and its backpressure contract (``paused_reason``'s
sentence too: ``spool_full_reason``): ONE signal. A source
pauses by itself when the spool refuses a chunk (``SpoolFull``: nothing more is read, the
files or the pipe are the buffer) and says why in ``paused_reason``; it resumes when
``notify_room()`` is called from the acknowledgement path (a chunk left the spool, so
there may be room), or by itself after a short retry interval (the spool can be full
because the disk is, which no acknowledgement may end). Nothing polls for room. Batching
shares the path: ``notify_delivery_room()`` says an acknowledgement left room to send.

Must not: hold behaviour; each source implements it.
"""

from __future__ import annotations

from typing import Protocol

from main_process.spool.chunks import SpoolFull


def spool_full_reason(full: SpoolFull) -> str:
    """The ``paused_reason`` of a source the spool refused."""
    return (
        f"The spool is full ({full.buffered_bytes} of {full.max_bytes} bytes waiting "
        "for the server); reading is paused until it drains."
    )


class LineSource(Protocol):
    """A source of lines appended to the spool; see the module docstring."""

    @property
    def paused_reason(self) -> str | None:
        """Why reading is paused for a full spool (one sentence), or None."""
        ...

    def notify_room(self) -> None:
        """Acknowledgements freed spool room: a paused source tries again now."""
        ...

    def notify_delivery_room(self) -> None:
        """An acknowledgement left room to send: lines grouped while waiting go now."""
        ...

    async def run(self) -> None:
        """Read until stopped (``SourceSet.stop``) or the stream ends (``TextFeed``)."""
        ...
