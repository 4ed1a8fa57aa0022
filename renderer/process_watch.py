"""Noticing that the main process has exited, independently of any socket.

Owns: ``ProcessWatch``, a daemon thread that calls back once when a given process ends.
On Linux it waits on a pidfd (``os.pidfd_open``), which wakes the moment the process exits
and cannot be fooled by the pid being reused; elsewhere it polls ``os.kill(pid, 0)``.

This is one of the window's "main process is gone" signals (the others: the update feed
going silent, the command channel failing). It covers a main process killed with
SIGKILL, which never gets to say goodbye on its sockets.

Must not: touch the window; it only calls ``on_gone``.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

# How often the watch looks without a pidfd, and how soon a stopped watch notices; with a
# pidfd the exit itself wakes it at once. Long: an idle host should wake rarely.
POLL_INTERVAL_S = 2.0


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


class ProcessWatch:
    """Calls ``on_gone(reason)`` once, from its own thread, when ``pid`` has exited."""

    def __init__(
        self, pid: int, on_gone: Callable[[str], None], poll_interval: float = POLL_INTERVAL_S
    ) -> None:
        self._pid = pid
        self._on_gone = on_gone
        self._poll_interval = poll_interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="main-process-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        try:
            fd = os.pidfd_open(self._pid)
        except ProcessLookupError:
            self._on_gone(f"process {self._pid} does not exist")
            return
        except (AttributeError, OSError):
            self._poll_with_kill()
            return
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while not self._stopping.is_set():
                if poller.poll(int(self._poll_interval * 1000)):
                    self._on_gone(f"process {self._pid} exited")
                    return
        finally:
            os.close(fd)

    def _poll_with_kill(self) -> None:
        while not self._stopping.is_set():
            if not process_exists(self._pid):
                self._on_gone(f"process {self._pid} exited")
                return
            self._stopping.wait(self._poll_interval)
