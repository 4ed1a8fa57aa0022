"""The main process: the one owner of the server connection, the tokens and the spool.

It puts the parts together and runs them on one asyncio loop:

    sources (files, stdin, demo) ──append──▶ Spool ◀──load/ack── ServerConnection ──▶ server
                                               │                        │
                                               └──── status, stats, lines, events ──▶ IpcHost
                                                                                  (XPUB + ROUTER)

- What viewers are told (status, recent lines, stats, the shipping history, and what
  needs a person through ``notifications.NotificationPolicy``) is composed and published
  by ``status_publication.StatusPublication``, which this module wakes on every change.
- Commands from viewers and the CLI (``Connect``, ``Login``, ``OpenWindow``, ``Shutdown``…)
  arrive on the ROUTER and are answered by ``command_handlers.CommandHandlers``, looked
  up by type in its ``COMMAND_TABLE``.
- ``stop()`` (a ``Shutdown`` command, SIGTERM or SIGINT) closes the connection, the
  sources and the windows; the spool keeps whatever was not acknowledged for next time.
- Windows live in one renderer host process (``windows.WindowHost``), started with the
  first window and asked for more without waiting on it. A host that cannot show its
  page (no display server, a Qt platform plugin missing a library) is one sentence on
  stderr and in the status's ``lastError``, once; it is not started again by itself. A
  host that dies after showing windows is started again with the same windows; the
  windows of a host that ended are said to be closed for it. With no window wanted but a
  display, a host is started for the tray alone (``WindowHost.show_tray``); it reports
  its tray (``ReportTray``, re-published as the ``tray`` state) or ends with nothing
  to show, which is no failure.

Owns the parts' construction and wiring (which callback of one part reaches which other
part), their start and stop in order, the token store's opening (waiting while the
keychain that holds the tokens cannot be reached), and what happens when a renderer host
ends.

Must not: decide protocol matters (``connection.state`` does), read files itself
(``sources``/``text_feed`` do), answer commands (``command_handlers`` does), compose
status (``status_publication`` does), or block the loop on a viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipc.host import IpcHost
from ipc.messages import ServerEvent, TrayState, WindowState
from main_process.command_handlers import CommandHandlers
from main_process.connection.server_connection import ServerConnection
from main_process.connection.state import ConnectionConfig, ConnectionStatus
from main_process.credentials import ClientIdFile, TokenStore
from main_process.desktop_notifications import DesktopNotifier
from main_process.keychain import AnyTokenStore, KeychainUnavailable, open_token_store
from main_process.notifications import NotificationPolicy
from main_process.paths import DataPaths, ensure_private_dir
from main_process.settings import Settings
from main_process.shipping_history import ShippingRecorder
from main_process.sources.line_source import LineSource
from main_process.sources.source_set import SourceSet
from main_process.sources.star_citizen import star_citizen_preset
from main_process.sources.text_feed import STDIN_NAME, TextFeed, read_stdin, write_demo_log
from main_process.spool.chunks import Spool
from main_process.status_publication import StatusPublication
from main_process.windows import HostEnded, WindowHost, can_show_windows

if TYPE_CHECKING:
    from main_process.embedded_server import EmbeddedServer

__all__ = ["MainProcess", "RunOptions"]

log = logging.getLogger("log_monitor.main")

# The sources' safety-net rescan where inotify sees every change (local file systems):
# each look costs a wake-up, ~0.06 % of a core at one a second, for nothing found.
QUIET_RESCAN_INTERVAL = 10.0
KEYCHAIN_RETRY_SECONDS = 5.0
EXIT_WINDOWS_FAILED = 1


@dataclass(frozen=True)
class RunOptions:
    """What ``log-monitor run`` was asked beyond the settings."""

    read_stdin: bool = False
    demo: bool = False


@dataclass(frozen=True)
class FollowPlan:
    """What the sources follow: the settings' patterns and backlog, a game's, the demo's."""

    patterns: list[str]
    backlog: list[str]
    rotation_dirs: dict[str, tuple[str, ...]]
    game: str = ""
    game_trouble: str | None = None

    @classmethod
    def of(cls, settings: Settings, demo_log: Path | None) -> FollowPlan:
        plan = cls(list(settings.sources), list(settings.backlog), {})
        if settings.game == "star-citizen":
            preset = star_citizen_preset(
                Path(settings.game_dir) if settings.game_dir is not None else None
            )
            plan = cls(
                plan.patterns + list(preset.sources),
                plan.backlog + list(preset.backlog),
                dict(preset.rotation_dirs),
                preset.description,
                preset.trouble,
            )
            log.info("%s", preset.trouble or preset.description)
        if demo_log is not None:
            plan.patterns.append(str(demo_log))
        return plan


class MainProcess:
    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.settings = settings
        self.options = options
        self.paths = DataPaths(ensure_private_dir(settings.data_dir))
        self.client_ids = ClientIdFile(self.paths.root)
        self.client_id = self.client_ids.load_or_create()
        # Opened in ``run`` (it may have to wait for the keychain): ``_open_token_store``.
        self.token_store: AnyTokenStore = TokenStore(self.paths.tokens)
        self.token_store_name = ""
        self.spool = Spool(self.paths.spool, self.client_id, max_bytes=settings.spool_max_bytes)
        self._stopping = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        self.embedded: EmbeddedServer | None = None
        self.server_url = settings.server or ""
        self.host: IpcHost | None = None
        self.connection: ServerConnection | None = None
        self.status = StatusPublication(self)
        self.commands = CommandHandlers(self)
        self.windows = WindowHost(
            self.paths.root,
            on_change=self.status.dirty,
            publish=self.status.publish,
            tray=not settings.exit_with_windows,
        )
        self.notifications = NotificationPolicy(
            enabled=settings.notifications, unreachable_after=settings.notify_unreachable_after
        )
        self.notifier = DesktopNotifier(self.status.show_in_tray)
        self.shipping = ShippingRecorder()
        self.feeds: list[TextFeed] = []
        # The demo is a real file followed like any other, so `make run` shows the file
        # path of the product, not a shortcut around it.
        self.demo_log = self.paths.root / "demo" / "game.log" if options.demo else None
        plan = FollowPlan.of(settings, self.demo_log)
        self.game = plan.game
        self.sources = SourceSet(
            plan.patterns,
            plan.backlog,
            self.spool,
            on_appended=self._flush_wanted_set,
            on_trouble=self._on_trouble,
            on_pause_changed=self._on_pause_changed,
            on_chunk=self.status.add_lines,
            delivery_room=self._delivery_room,
            poll=settings.poll,
            from_end=settings.from_end,
            chunk_max_bytes=settings.chunk_max_bytes,
            linger=settings.chunk_linger_ms / 1000,
            follow_symlinks=settings.follow_symlinks,
            quiet_rescan_interval=QUIET_RESCAN_INTERVAL,
            forget_after=settings.forget_after_days * 86_400,
            rotation_dirs=plan.rotation_dirs,
            encoding=settings.encoding,
            encodings=settings.encodings,
        )
        self.status.dirty()
        self.status.source_warning = plan.game_trouble
        self._exit_status = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.stop)
        if self.settings.server is None:
            # Imported only here: the reference server costs ~0.4 s to import (a scrypt
            # hash among it), which a client shipping to a remote server never needs.
            from main_process.embedded_server import EmbeddedServer

            self.embedded = EmbeddedServer(self.paths.server_data, self.settings.socketio_path)
            self.server_url = self.embedded.start()
        tasks: list[asyncio.Task[Any]] = []
        sources_task: asyncio.Task[None] | None = None
        try:
            self.host = await IpcHost(self.paths.root, self.commands.handle).start()
            self.notifier.start()
            if not await self._open_token_store():
                return self._exit_status
            self.connection = ServerConnection(
                self.server_url,
                client_id=self.client_id,
                chunk_store=self.spool,
                token_store=self.token_store,
                client_ids=self.client_ids,
                on_status=self._on_connection_status,
                on_server_event=self._on_server_event,
                on_delivered=self._on_delivered,
                config=ConnectionConfig(
                    window=self.settings.window,
                    ack_timeout=self.settings.ack_timeout,
                    ping_interval=self.settings.ping_interval,
                    silence_timeout=self.settings.silence_timeout,
                ),
                socketio_path=self.settings.socketio_path,
                namespace=self.settings.namespace,
            )
            await self.connection.start()
            self.status.publish_status()
            tasks.append(asyncio.create_task(self.status.run(), name="status"))
            tasks.append(asyncio.create_task(self._flush_when_appended(), name="flush"))
            for feed in self._make_feeds():
                self.feeds.append(feed)
                tasks.append(asyncio.create_task(feed.run(), name=f"feed {feed.name}"))
            if self.demo_log is not None:
                tasks.append(asyncio.create_task(write_demo_log(self.demo_log), name="demo writer"))
            sources_task = asyncio.create_task(self.sources.run(), name="sources")
            for task in (*tasks, sources_task):
                task.add_done_callback(self._report_task_failure)
            await self.connection.connect_to_server()
            initial_windows = self._initial_window_count()
            self.windows.open(initial_windows)
            if initial_windows == 0 and not self.settings.headless:
                self.windows.show_tray()
            log.info(
                "shipping to %s as client %s (data in %s)",
                self.server_url,
                self.client_id,
                self.paths.root,
            )
            await self._stopping.wait()
            return self._exit_status
        finally:
            self.sources.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if sources_task is not None:
                await asyncio.gather(sources_task, return_exceptions=True)
            self.windows.close_all()
            await self.notifier.close()
            if self.connection is not None:
                await self.connection.close()
            if self.host is not None:
                await self.host.close()
            if self.embedded is not None:
                self.embedded.stop()
            waiting = self.spool.stats().buffered_chunks
            self.spool.close()
            log.info("stopped; %d chunks wait in the spool", waiting)

    def _report_task_failure(self, task: asyncio.Task[Any]) -> None:
        # A part that fails must be seen, not silently missing: the log has the trace,
        # every viewer gets the sentence, and the other parts keep shipping.
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s failed", task.get_name(), exc_info=task.exception())
        self.status.source_warning = f"internal error in {task.get_name()}; see the log"
        self.status.dirty()

    def stop(self) -> None:
        self._stopping.set()

    def _initial_window_count(self) -> int:
        if self.settings.headless:
            return 0
        if self.settings.windows is not None:
            return self.settings.windows if can_show_windows() else 0
        return 1 if can_show_windows() else 0

    def _make_feeds(self) -> list[TextFeed]:
        streams: list[tuple[str, AsyncIterator[bytes]]] = []
        if self.options.read_stdin:
            streams.append((STDIN_NAME, read_stdin()))
        return [
            TextFeed(
                name,
                stream,
                self.spool,
                on_appended=self._on_appended,
                delivery_room=self._delivery_room,
                max_chunk_bytes=self.settings.chunk_max_bytes,
                linger=self.settings.chunk_linger_ms / 1000,
            )
            for name, stream in streams
        ]

    async def _open_token_store(self) -> bool:
        """Choose where the tokens live and move them there (``keychain``); while the
        keychain that holds them cannot be reached, say so and try again every few
        seconds (nothing is presented in their place). False: stopped meanwhile."""
        while True:
            try:
                opened = open_token_store(
                    self.paths.tokens, self.paths.root, self.settings.token_store
                )
            except KeychainUnavailable as exc:
                if self.status.token_store_error != str(exc):
                    log.warning("%s Waiting for it.", exc)
                self.status.token_store_error = f"{exc} Waiting for it."
                self.status.publish_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), KEYCHAIN_RETRY_SECONDS)
                if self._stopping.is_set():
                    return False
                continue
            self.token_store = opened.store
            self.token_store_name = opened.description
            if self.status.token_store_error is not None:
                log.info("the tokens are reachable again (%s)", opened.description)
            self.status.token_store_error = None
            log.info("tokens kept in %s", opened.description)
            return True

    # ------------------------------------------------------------------ sources

    def _on_appended(self, path: str, text: str) -> None:
        self.status.add_lines(path, text)
        self._flush_wanted_set()

    def _delivery_room(self) -> bool:
        """Whether a chunk cut now would be sent at once (the sources cut lines at once
        then, and group them while not)."""
        connection = self.connection
        return connection is not None and connection.has_delivery_room(self.spool.buffered_chunks)

    def _flush_wanted_set(self) -> None:
        self.status.dirty()
        self._flush_wanted.set()

    def _on_delivered(self) -> None:
        """A chunk left the spool (acknowledged, or refused for good): room for the
        sources, new counters for the viewers."""
        room = not self.spool.stats().full
        for source in self._line_sources():
            source.notify_delivery_room()
            if room:
                source.notify_room()
        self.status.wanted()

    def _line_sources(self) -> list[LineSource]:
        return [self.sources, *self.feeds]

    def _on_trouble(self, message: str) -> None:
        log.warning("%s", message)
        self.status.source_warning = message
        self.status.dirty()

    def _on_pause_changed(self, reason: str | None) -> None:
        if reason is None:
            log.info("reading resumed")
        else:
            log.warning("reading paused: %s", reason)
        self.status.dirty()

    async def _flush_when_appended(self) -> None:
        # One waiter coalesces any number of appends into one flush request at a time.
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            if self.connection is not None:
                await self.connection.flush_log_buffer()

    # ------------------------------------------------------------------ connection

    def _on_connection_status(self, status: ConnectionStatus) -> None:
        self.status.dirty()
        self.status.publish_status(status)
        if status.state == "connected":
            for source in self._line_sources():
                source.notify_delivery_room()

    def _on_server_event(self, payload: dict[str, Any]) -> None:
        self.status.publish(ServerEvent(payload=payload))

    # ------------------------------------------------------------------ windows

    def on_host_ended(self, ended: HostEnded) -> None:
        # A killed host cannot say its windows closed; say it for it, so their states
        # leave the cache (late viewers must not list a dead window).
        for ref in ended.closed:
            self.status.publish(WindowState(host=ref.host, window=ref.window, closed=True))
        if ended.had_tray:
            self.status.publish(TrayState(host=ended.pid, closed=True))
        for sentence in (ended.start_failure, ended.gave_up):
            if sentence is not None and sentence != self.status.window_error:
                # The person at the terminal sees nothing else: there is no window.
                print(f"log-monitor: {sentence}", file=sys.stderr, flush=True)
                self.status.window_error = sentence
                self.status.dirty()
        if self.settings.exit_with_windows and self.windows.count == 0:
            log.info("the last window closed; stopping (--exit-with-windows)")
            if ended.start_failure is not None:
                self._exit_status = EXIT_WINDOWS_FAILED
            self.stop()
