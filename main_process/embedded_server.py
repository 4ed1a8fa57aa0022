"""The embedded default: the reference server running inside the main process.

When ``log-monitor run`` is given no ``--server``, it starts ``server/`` on 127.0.0.1, on a
port the OS picks, with its data in ``<data-dir>/server``, so the client works on a
machine with nothing else installed. It runs on its own thread with its own event loop:
a slow commit on the server side then never delays the main loop's sources, spool or
status, and the main process's signals stay the main process's.

This module is the main process's only door to ``server/``: nothing else in
``main_process`` imports it, and the server's errors stop here, translated into the
client's ``EmbeddedServerError``. The server is imported when one is made, never when
this module is: it costs ~0.4 s to import (a scrypt hash among it), which a client
shipping to a remote server never needs.

Must not: be used when the user named a server; it is a convenience, not a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import DEFAULT_SOCKETIO_PATH

if TYPE_CHECKING:
    from server.app import RunningServer

log = logging.getLogger("log_monitor.embedded_server")


class EmbeddedServerError(Exception):
    """The embedded server cannot use its data dir; the message is one sentence."""


class EmbeddedServer:
    def __init__(self, data_dir: Path, socketio_path: str = DEFAULT_SOCKETIO_PATH) -> None:
        from server.app import RunningServer, ServerConfig
        from server.storage import StorageError

        # Binding happens here, on the caller's thread, so the URL is known at once and a
        # bind failure surfaces as an exception of the caller's.
        config = ServerConfig(
            data_dir=data_dir, host="127.0.0.1", port=0, socketio_path=socketio_path
        )
        try:
            self._server: RunningServer = RunningServer(config)
        except StorageError as exc:
            raise EmbeddedServerError(str(exc)) from exc
        self.url = self._server.url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-server", daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        try:
            # asyncio.run also cancels what the server leaves pending (engine.io's service
            # and ping tasks) before closing the loop.
            asyncio.run(self._serve())
        except Exception:
            log.exception("the embedded server stopped with an error")
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started.set()
        await self._server.run(install_signal_handlers=False)

    def start(self) -> str:
        self._thread.start()
        self._started.wait(10)
        log.info("embedded server at %s", self.url)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # The loop may close between the check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._server.stop)
        self._thread.join(timeout)
