"""Python's cyclic garbage collector in a process with Qt windows, run on the GUI thread.

Owns: ``GuiThreadCollector``, the only collector of reference cycles in the renderer host
on Qt.

Why: a Qt object left in a reference cycle (a closed window's view and page hold each
other through their signals) is destroyed when the cycle is collected, and CPython
collects on whichever thread's allocation crosses a threshold. Qt's GUI objects must be
destroyed on the GUI thread: Qt WebEngine ends the process ("Cannot make QOpenGLContext
current in a different thread", SIGABRT) when one is not. The renderer host died so when
a collection started in one of pywebview's JavaScript threads just after a window closed.

So automatic collection is turned off, and a timer on the GUI thread runs the
collections automatic collection would have run: at each tick, the oldest generation
whose count has passed its threshold is collected. Between ticks nothing is collected;
garbage without cycles is freed at once as always (reference counting).

Must not: be created before the ``QApplication`` exists, or off the GUI thread.
"""

from __future__ import annotations

import gc
import logging

from PySide6.QtCore import QTimer

log = logging.getLogger(__name__)

# How often the GUI thread looks whether a collection is due: a count read when nothing
# is (an idle host allocates little between ticks), so the cost is the wakeup.
COLLECT_EVERY_MS = 1000


def due_generation(counts: tuple[int, int, int], thresholds: tuple[int, int, int]) -> int | None:
    """The generation CPython would collect now (the oldest past its threshold), if any."""
    for generation in (2, 1, 0):
        if thresholds[generation] and counts[generation] > thresholds[generation]:
            return generation
    return None


class GuiThreadCollector:
    """Turns automatic collection off and collects on a GUI-thread timer instead."""

    def __init__(self, every_ms: int = COLLECT_EVERY_MS) -> None:
        gc.disable()
        self._timer = QTimer()
        self._timer.timeout.connect(self.collect_if_due)
        self._timer.start(every_ms)
        log.info("reference cycles are collected on the GUI thread, every %d ms", every_ms)

    def collect_if_due(self) -> None:
        """Collect the generation that is due, if one is (GUI thread)."""
        thresholds = gc.get_threshold()
        if not thresholds[0]:
            return  # collection turned off altogether (gc.set_threshold(0))
        generation = due_generation(gc.get_count(), thresholds)
        if generation is not None:
            gc.collect(generation)
