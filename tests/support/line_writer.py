"""A writer that appends numbered lines to a log file from a thread (``LineWriter``), for the
tests that check every line written reaches the server once, in order."""

from __future__ import annotations

import random
import threading
from pathlib import Path


class LineWriter:
    """Appends numbered lines to a log file from a thread until told to stop."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.lines_written = 0
        self._stop = threading.Event()
        self._random = random.Random(seed)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LineWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        with self.path.open("a", encoding="utf-8", buffering=1) as log:
            while not self._stop.is_set():
                for _ in range(self._random.randint(1, 40)):
                    self.lines_written += 1
                    log.write(
                        f"{self.lines_written:07d} event ünïcode {'x' * self._random.randint(0, 80)}\n"
                    )
                # Pacing, not synchronisation: a writer that never pauses would make the
                # file grow faster than a test of restarts needs.
                self._stop.wait(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
