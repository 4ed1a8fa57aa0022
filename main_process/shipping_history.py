"""The last ten minutes of shipping, one sample a second, for the windows' chart.

Owns ``ShippingRecorder``: fed the spool's running totals about once a second (the main
process's stats tick), it keeps a bounded ring of ``HistorySample``s (bytes acknowledged
per second over the interval just ended, and the chunks waiting at its end) and hands out
the ring as a ``ShippingHistory`` message. The main process publishes it on the
``history`` state topic, so a window opened late gets the whole ring from the publisher's
cache and draws ten minutes of history at its first paint, not an empty chart.

Why in the main process, not in each page: a page only sees what was published while it
was open; the main process has seen every second since it started.

Must not: do I/O or read a clock (times are passed in), or grow: ``capacity`` samples at
most (600: ten minutes).
"""

from __future__ import annotations

from collections import deque

from ipc.messages import HistorySample, ShippingHistory

HISTORY_SECONDS = 600
INTERVAL_MS = 1000


class ShippingRecorder:
    """The ring of per-second samples; see the module docstring."""

    def __init__(self, capacity: int = HISTORY_SECONDS) -> None:
        self._samples: deque[HistorySample] = deque(maxlen=capacity)
        self._last: tuple[float, int] | None = None  # (monotonic s, sent bytes) of the last call

    def record(self, now: float, wall_ms: int, sent_bytes: int, buffered_chunks: int) -> None:
        """The spool's totals at monotonic time ``now`` (wall clock ``wall_ms``).

        The first call only sets the starting point. A total that went down (a new
        spool) counts as nothing shipped, never as a negative rate.
        """
        last = self._last
        self._last = (now, sent_bytes)
        if last is None or now <= last[0]:
            return
        rate = max(0, sent_bytes - last[1]) / (now - last[0])
        self._samples.append(
            HistorySample(at_ms=wall_ms, sent_bytes_per_s=rate, buffered_chunks=buffered_chunks)
        )

    def history(self) -> ShippingHistory:
        return ShippingHistory(interval_ms=INTERVAL_MS, samples=tuple(self._samples))

    def __len__(self) -> int:
        return len(self._samples)
