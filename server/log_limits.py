"""Rate limits on the reference server's log: one line per kind of message per interval.

A peer that can make the server log a line at will can fill its disk: a flood once made
asyncio log "socket.accept() out of system resource" 354,303 times in 20 s. The
:class:`RepeatedMessageFilter` lets the first record of each *kind* through per interval
and counts the rest; the count is said on the next line of that kind, or by
:meth:`RepeatedMessageFilter.report_suppressed` (which the running server calls every
interval) once the interval is over, so nothing is hidden without a number.

A kind is the logger, the level and the message template's first line (``"chunk rejected:
%s"`` is one kind whatever the chunk): asyncio and uvicorn put tracebacks and object
addresses in later lines or arguments. Only warnings and errors are limited: info lines
appear only with ``--verbose``, which asks for every event (and tests count them).

Must not: drop a record without counting it, or keep state without bound (at most
``MAX_KINDS`` kinds are held; making room reports the counts of the windows it forgets).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_INTERVAL_SECONDS = 10.0
MAX_KINDS = 1000

# Loggers outside the server's own that the server makes speak: asyncio's (accept errors,
# unretrieved task exceptions), uvicorn's, and Engine.IO's and Socket.IO's.
LIBRARY_LOGGERS = ("asyncio", "uvicorn", "uvicorn.error", "engineio.server", "socketio.server")
SERVER_LOGGER_PREFIX = "log_monitor_server"

Kind = tuple[str, int, str]


@dataclass
class _Window:
    started: float
    suppressed: int = 0


def _kind(record: logging.LogRecord) -> Kind:
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    return record.name, record.levelno, template.split("\n", 1)[0][:200]


class RepeatedMessageFilter(logging.Filter):
    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.min_level = min_level
        self._clock = clock
        self._windows: dict[Kind, _Window] = {}
        # The embedded server logs from its own thread into loggers (asyncio's) that the
        # client's main thread uses too.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or getattr(record, "suppressed_report", False):
            return True
        kind = _kind(record)
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is not None and now - window.started < self.interval:
                window.suppressed += 1
                return False
            forgotten = self._forget_old(now) if window is None else []
            self._windows[kind] = _Window(started=now)
        self._report(forgotten)
        if window is not None and window.suppressed:
            record.msg = (
                f"{record.msg} [and {window.suppressed} more like this, not logged, "
                f"in the {now - window.started:.0f} s before]"
            )
        return True

    def report_suppressed(self, final: bool = False) -> None:
        """Say how many lines of each kind were held back in intervals now over (every
        interval, when ``final``: the server is stopping)."""
        now = self._clock()
        with self._lock:
            reports = [
                (kind, window.suppressed, now - window.started)
                for kind, window in self._windows.items()
                if window.suppressed and (final or now - window.started >= self.interval)
            ]
            for kind, _, _ in reports:
                self._windows[kind].suppressed = 0
        self._report(reports)

    @staticmethod
    def _report(reports: list[tuple[Kind, int, float]]) -> None:
        for (name, level, first_line), count, seconds in reports:
            logging.getLogger(name).log(
                level,
                "%d more like this, not logged, in the last %.0f s: %s",
                count,
                seconds,
                first_line,
                extra={"suppressed_report": True},
            )

    def _forget_old(self, now: float) -> list[tuple[Kind, int, float]]:
        """Make room for a new kind; returns the counts of forgotten windows to report."""
        if len(self._windows) < MAX_KINDS:
            return []
        finished = [
            kind
            for kind, window in self._windows.items()
            if now - window.started >= self.interval and not window.suppressed
        ]
        # Dicts keep insertion order: without finished windows, the oldest tenth goes.
        doomed = finished or list(self._windows)[: MAX_KINDS // 10]
        forgotten = []
        for kind in doomed:
            window = self._windows.pop(kind)
            if window.suppressed:
                forgotten.append((kind, window.suppressed, now - window.started))
        return forgotten


def server_logger_names() -> list[str]:
    """The server's loggers (those its modules created) and the libraries' it uses."""
    own = [
        name
        for name in logging.Logger.manager.loggerDict
        if name == SERVER_LOGGER_PREFIX or name.startswith(SERVER_LOGGER_PREFIX + ".")
    ]
    return sorted(set(own) | {SERVER_LOGGER_PREFIX}) + list(LIBRARY_LOGGERS)


def install(log_filter: logging.Filter, names: Iterable[str]) -> None:
    """Attach ``log_filter`` to each named logger (a filter on a logger sees only the
    records made there, not those of its children, hence every name)."""
    for name in names:
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)


def uninstall(log_filter: logging.Filter, names: Iterable[str]) -> None:
    for name in names:
        logging.getLogger(name).removeFilter(log_filter)
