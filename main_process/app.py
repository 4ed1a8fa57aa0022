"""The main process: the one owner of the server connection, the tokens and the spool.

It puts the parts together and runs them on one asyncio loop:

    sources (files, stdin, demo) ──append──▶ Spool ◀──load/ack── ServerConnection ──▶ server
                                               │                        │
                                               └──── status, stats, lines, events ──▶ IpcHost
                                                                                  (XPUB + ROUTER)

- Status is published on every change of the connection, and otherwise when the spool's
  counters moved, at most every ``STATUS_INTERVAL`` seconds: an ack storm must not become
  a publish storm, and a viewer still sees counters move several times a second.
- Commands from viewers and the CLI (``Connect``, ``Login``, ``OpenWindow``, ``Shutdown``…)
  arrive on the ROUTER and are answered here. A password arrives once, is sent to the
  server's login endpoint, and is dropped; tokens are written to the 0600 token file
  before the connection is told to use them. A login names the installation's current
  client id (the connection's: the server may have made it take a new one) and shows its
  credentials; a logout asks the server first, so the guest token it may hand back for
  the same id is what the connection goes on with.
- ``stop()`` (a ``Shutdown`` command, SIGTERM or SIGINT) closes the connection, the
  sources and the windows; the spool keeps whatever was not acknowledged for next time.
- What needs a person (signed out by the server, the spool full, chunks refused for
  good, the server unreachable for ``notify_unreachable_after``) is decided by
  ``notifications.NotificationPolicy``, fed every published status, the user's Connect
  and Disconnect and a clock, and delivered by ``desktop_notifications.DesktopNotifier``
  (the desktop's notification service, else the tray's own message).
- Every second the spool's totals go into ``shipping_history.ShippingRecorder`` and the
  last ten minutes are published as ``ShippingHistory`` (cached: a window opened late
  draws them at once).
- Windows live in one renderer host process (``windows.WindowHost``), started with the
  first window and asked for more without waiting on it. A host that cannot show its
  page (no display server, a Qt platform plugin missing a library) is one sentence on
  stderr and in the status's ``lastError``, once; it is not started again by itself. A
  host that dies after showing windows is started again with the same windows; the
  windows of a host that ended are said to be closed for it. With no window wanted but a
  display, a host is started for the tray alone (``WindowHost.show_tray``); it reports
  its tray (``ReportTray``, re-published as the ``tray`` state) or ends with nothing
  to show, which is no failure.

Must not: decide protocol matters (``connection_state`` does), read files itself
(``sources``/``text_feed`` do), or block the loop on a viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ipc.host import IpcHost
from ipc.messages import (
    Command,
    Connect,
    ControlWindows,
    Disconnect,
    Failed,
    Login,
    LogLine,
    LogLines,
    Logout,
    Ok,
    OpenWindow,
    Published,
    ReportTray,
    ReportWindow,
    ServerEvent,
    Shutdown,
    Stats,
    Status,
    TrayNotice,
    TrayState,
    WindowState,
)
from ipc.messages import Reply as IpcReply
from main_process.auth_client import SignInFailed, sign_in, sign_out, signed_out
from main_process.connection import ServerConnection
from main_process.connection_state import ConnectionConfig, ConnectionStatus
from main_process.desktop_notifications import DesktopNotifier
from main_process.identity import ClientIdFile, TokenStore
from main_process.keychain import AnyTokenStore, KeychainUnavailable, open_token_store
from main_process.notifications import Notification, NotificationPolicy
from main_process.paths import DataPaths, ensure_private_dir
from main_process.settings import Settings
from main_process.shipping_history import ShippingRecorder
from main_process.sources import SourceSet
from main_process.spool import Spool
from main_process.star_citizen import star_citizen_preset
from main_process.text_feed import STDIN_NAME, TextFeed, read_stdin, write_demo_log
from main_process.windows import HostEnded, WindowHost, can_show_windows

if TYPE_CHECKING:
    from main_process.embedded_server import EmbeddedServer

log = logging.getLogger("log_monitor.main")

STATUS_INTERVAL = 0.1
STATS_INTERVAL = 1.0
# The sources' safety-net rescan where inotify sees every change (local file systems):
# each look costs a wake-up, ~0.06 % of a core at one a second, for nothing found.
QUIET_RESCAN_INTERVAL = 10.0
RECENT_LINES_PER_PUBLISH = 500
KEYCHAIN_RETRY_SECONDS = 5.0
EXIT_WINDOWS_FAILED = 1


def last_lines(text: str, count: int) -> list[str]:
    """The last ``count`` lines of ``text``, as ``str.splitlines`` cuts them, splitting
    only the end of it: a 512 KiB chunk holds thousands of lines, and the viewers are
    sent the last few hundred."""
    start = len(text)
    # After the (count + 1)-th newline from the end, at least ``count`` lines remain; a
    # cut just after a newline is a line boundary for every separator splitlines knows.
    for _ in range(count + 1):
        start = text.rfind("\n", 0, start)
        if start < 0:
            return text.splitlines()[-count:] if count > 0 else []
    return text[start + 1 :].splitlines()[-count:] if count > 0 else []


@dataclass(frozen=True)
class RunOptions:
    """What ``log-monitor run`` was asked beyond the settings."""

    read_stdin: bool = False
    demo: bool = False


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
        self._token_store_error: str | None = None
        self.spool = Spool(self.paths.spool, self.client_id, max_bytes=settings.spool_max_bytes)
        self._stopping = asyncio.Event()
        self._room_freed = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        # Something to publish (a change, an ack, a window report): wakes the publisher.
        self._publish_wanted = asyncio.Event()
        self.embedded: EmbeddedServer | None = None
        self.server_url = settings.server or ""
        self.host: IpcHost | None = None
        self.connection: ServerConnection | None = None
        self.windows = WindowHost(
            self.paths.root,
            on_change=self._status_dirty,
            publish=self._publish,
            tray=not settings.exit_with_windows,
        )
        self.notifications = NotificationPolicy(
            enabled=settings.notifications, unreachable_after=settings.notify_unreachable_after
        )
        self.notifier = DesktopNotifier(self._show_in_tray)
        self.shipping = ShippingRecorder()
        self.feeds: list[TextFeed] = []
        patterns = list(settings.sources)
        backlog = list(settings.backlog)
        rotation_dirs: dict[str, tuple[str, ...]] = {}
        self.game = ""
        game_trouble: str | None = None
        if settings.game == "star-citizen":
            preset = star_citizen_preset(
                Path(settings.game_dir) if settings.game_dir is not None else None
            )
            patterns += preset.sources
            backlog += preset.backlog
            rotation_dirs = preset.rotation_dirs
            self.game = preset.description
            game_trouble = preset.trouble
            log.info("%s", game_trouble or self.game)
        self.demo_log: Path | None = None
        if options.demo:
            # The demo is a real file followed like any other, so `make run` shows the
            # file path of the product, not a shortcut around it.
            self.demo_log = self.paths.root / "demo" / "game.log"
            patterns.append(str(self.demo_log))
        self.sources = SourceSet(
            patterns,
            backlog,
            self.spool,
            on_appended=self._flush_wanted_set,
            on_trouble=self._on_trouble,
            on_pause_changed=self._on_pause_changed,
            on_chunk=self._on_chunk,
            delivery_room=self._delivery_room,
            poll=settings.poll,
            from_end=settings.from_end,
            chunk_max_bytes=settings.chunk_max_bytes,
            linger=settings.chunk_linger_ms / 1000,
            follow_symlinks=settings.follow_symlinks,
            quiet_rescan_interval=QUIET_RESCAN_INTERVAL,
            forget_after=settings.forget_after_days * 86_400,
            rotation_dirs=rotation_dirs,
            encoding=settings.encoding,
            encodings=settings.encodings,
        )
        self._recent_lines: deque[LogLine] = deque(maxlen=RECENT_LINES_PER_PUBLISH)
        self._last_status: Status | None = None
        self._status_dirty()
        self._source_warning: str | None = game_trouble
        # Why the last window could not start; cleared when a window shows its page.
        self._window_error: str | None = None
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
            self.host = await IpcHost(self.paths.root, self._handle_command).start()
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
            self._publish_status()
            tasks.append(asyncio.create_task(self._publish_periodically(), name="status"))
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
        self._source_warning = f"internal error in {task.get_name()}; see the log"
        self._status_dirty()

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
                room_freed=self._room_freed,
                max_chunk_bytes=self.settings.chunk_max_bytes,
                linger=self.settings.chunk_linger_ms / 1000,
            )
            for name, stream in streams
        ]

    # ------------------------------------------------------------------ sources

    def _on_appended(self, path: str, text: str) -> None:
        self._on_chunk(path, text)
        self._flush_wanted_set()

    def _on_chunk(self, path: str, text: str) -> None:
        for line in last_lines(text, RECENT_LINES_PER_PUBLISH):
            self._recent_lines.append(LogLine(path=path, text=line))
        self._publish_wanted.set()

    def _delivery_room(self) -> bool:
        """Whether a chunk cut now would be sent at once (the sources cut lines at once
        then, and group them while not)."""
        connection = self.connection
        return connection is not None and connection.has_delivery_room(self.spool.buffered_chunks)

    def _flush_wanted_set(self) -> None:
        self._status_dirty()
        self._flush_wanted.set()

    def _on_delivered(self) -> None:
        """A chunk left the spool (acknowledged, or refused for good): room for the
        sources, new counters for the viewers."""
        self.sources.notify_delivery_room()
        if not self.spool.stats().full:
            self._room_freed.set()
            self.sources.notify_room()
        self._publish_wanted.set()

    def _on_trouble(self, message: str) -> None:
        log.warning("%s", message)
        self._source_warning = message
        self._status_dirty()

    def _on_pause_changed(self, reason: str | None) -> None:
        if reason is None:
            log.info("reading resumed")
        else:
            log.warning("reading paused: %s", reason)
        self._status_dirty()

    async def _flush_when_appended(self) -> None:
        # One waiter coalesces any number of appends into one flush request at a time.
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            if self.connection is not None:
                await self.connection.flush_log_buffer()

    # ------------------------------------------------------------------ status

    def _status_dirty(self) -> None:
        self._status_changed = True
        self._publish_wanted.set()

    def _on_connection_status(self, status: ConnectionStatus) -> None:
        self._status_dirty()
        self._publish_status(status)
        if status.state == "connected":
            self.sources.notify_delivery_room()

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
                if self._token_store_error != str(exc):
                    log.warning("%s Waiting for it.", exc)
                self._token_store_error = f"{exc} Waiting for it."
                self._publish_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), KEYCHAIN_RETRY_SECONDS)
                if self._stopping.is_set():
                    return False
                continue
            self.token_store = opened.store
            self.token_store_name = opened.description
            if self._token_store_error is not None:
                log.info("the tokens are reachable again (%s)", opened.description)
            self._token_store_error = None
            log.info("tokens kept in %s", opened.description)
            return True

    def _on_server_event(self, payload: dict[str, Any]) -> None:
        if self.host is not None:
            self.host.publisher.publish(ServerEvent(payload=payload))

    def current_status(self, connection: ConnectionStatus | None = None) -> Status:
        spool = self.spool.stats()
        if connection is None and self.connection is not None:
            connection = self.connection.status()
        paused = self.sources.paused_reason is not None or any(f.paused for f in self.feeds)
        last_error = connection.last_error if connection else None
        if paused:
            last_error = (
                last_error or "the spool is full: reading paused until the server catches up"
            )
        return Status(
            state=connection.state if connection else "disconnected",
            authenticated=connection.authenticated if connection else False,
            identity=connection.identity if connection else None,
            username=connection.username if connection else None,
            attempt=connection.attempt if connection else 0,
            next_retry_ms=connection.next_retry_ms if connection else None,
            server=self.server_url,
            client_id=self.connection.client_id if self.connection else self.client_id,
            buffered_chunks=spool.buffered_chunks,
            buffered_bytes=spool.buffered_bytes,
            sent_chunks=spool.sent_chunks,
            sent_bytes=spool.sent_bytes,
            dead_lettered=spool.dead_lettered,
            last_error=self._token_store_error
            or last_error
            or self._window_error
            or self._source_warning,
            windows=self.windows.count,
            spool_full=spool.full,
            paused=paused,
            credential_store=self.token_store_name,
            game=self.game,
        )

    def _publish_status(self, connection: ConnectionStatus | None = None) -> None:
        if self.host is None:
            return
        status = self.current_status(connection)
        self._status_changed = False
        if status != self._last_status:
            self._last_status = status
            self.host.publisher.publish(status)
            self._notify(self.notifications.on_status(status, time.monotonic()))

    def _notify(self, notifications: list[Notification]) -> None:
        for notification in notifications:
            self.notifier.submit(notification)

    def _show_in_tray(self, notification: Notification) -> bool:
        """The fallback where the desktop has no notification service: the tray's own
        message, if the host reports a tray shown."""
        tray = self.windows.tray
        if tray is None or not tray.shown:
            return False
        self._publish(TrayNotice(host=tray.host, title=notification.title, body=notification.body))
        return True

    def _next_publish_wake(self, now: float, stats_due: float, countdown_due: float) -> float:
        """Seconds until something is due with nothing else happening: the stats (and the
        history chart) every ``STATS_INTERVAL``, the notifications' next deadline, the
        retry countdown while one is shown, and a host that ended but is not reaped."""
        due = stats_due
        notification_due = self.notifications.next_deadline()
        if notification_due is not None:
            due = min(due, notification_due)
        if self._last_status is not None and self._last_status.next_retry_ms is not None:
            due = min(due, countdown_due)
        if self.windows.waiting_to_reap():
            due = min(due, now + STATUS_INTERVAL)
        return max(0.0, due - now)

    async def _publish_periodically(self) -> None:
        """Publish status, lines, stats and history when something changed or is due.

        Nothing polls: changes (appends, acks, connection states, window reports, a host
        ending) set ``_publish_wanted``, and the timeout is the next thing due. Status and
        lines go out at most every ``STATUS_INTERVAL``, so an ack storm is one publish.
        """
        last_stats = time.monotonic()
        last_sent = self.spool.stats()
        countdown_refresh = time.monotonic()
        last_publish = -STATUS_INTERVAL
        while True:
            now = time.monotonic()
            if not self._publish_wanted.is_set():
                timeout = self._next_publish_wake(
                    now, last_stats + STATS_INTERVAL, countdown_refresh + 1
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._publish_wanted.wait(), timeout)
                now = time.monotonic()
            if now < last_publish + STATUS_INTERVAL:
                await asyncio.sleep(last_publish + STATUS_INTERVAL - now)
                now = time.monotonic()
            self._publish_wanted.clear()
            last_publish = now
            self._notify(self.notifications.tick(now))
            ended = self.windows.reap()
            if ended is not None:
                self._on_host_ended(ended)
            spool = self.spool.stats()
            retrying = self._last_status is not None and self._last_status.next_retry_ms is not None
            if (
                self._status_changed
                or spool != last_sent
                or (retrying and now - countdown_refresh >= 1)
            ):
                countdown_refresh = now
                self._publish_status()
            if self._recent_lines and self.host is not None:
                self.host.publisher.publish(LogLines(lines=tuple(self._recent_lines)))
                self._recent_lines.clear()
            if now - last_stats >= STATS_INTERVAL and self.host is not None:
                elapsed = now - last_stats
                progress = self.sources.progress()
                self.host.publisher.publish(
                    Stats(
                        send_rate_chunks=(spool.sent_chunks - last_sent.sent_chunks) / elapsed,
                        send_rate_bytes=(spool.sent_bytes - last_sent.sent_bytes) / elapsed,
                        files_done=progress.files_done,
                        files_total=progress.files_total,
                        bytes_done=progress.bytes_done,
                        bytes_total=progress.bytes_total,
                        decode_errors=self.sources.counters().invalid_bytes_replaced
                        + sum(feed.invalid_bytes_replaced for feed in self.feeds),
                        checkpoints=self.sources.state_counts().checkpoints,
                        backlog_marks=self.sources.state_counts().backlog_marks,
                    )
                )
                self.shipping.record(
                    now, time.time_ns() // 1_000_000, spool.sent_bytes, spool.buffered_chunks
                )
                self.host.publisher.publish(self.shipping.history())
                last_stats = now
                last_sent = spool

    # ------------------------------------------------------------------ windows

    def _publish(self, message: Published) -> None:
        if self.host is not None:
            self.host.publisher.publish(message)

    def _on_host_ended(self, ended: HostEnded) -> None:
        # A killed host cannot say its windows closed; say it for it, so their states
        # leave the cache (late viewers must not list a dead window).
        for ref in ended.closed:
            self._publish(WindowState(host=ref.host, window=ref.window, closed=True))
        if ended.had_tray:
            self._publish(TrayState(host=ended.pid, closed=True))
        for sentence in (ended.start_failure, ended.gave_up):
            if sentence is not None and sentence != self._window_error:
                # The person at the terminal sees nothing else: there is no window.
                print(f"log-monitor: {sentence}", file=sys.stderr, flush=True)
                self._window_error = sentence
                self._status_dirty()
        if self.settings.exit_with_windows and self.windows.count == 0:
            log.info("the last window closed; stopping (--exit-with-windows)")
            if ended.start_failure is not None:
                self._exit_status = EXIT_WINDOWS_FAILED
            self.stop()

    # ------------------------------------------------------------------ commands

    async def _handle_command(self, command: Command) -> IpcReply:
        connection = self.connection
        if connection is None:
            return Failed(code="unavailable", message="the main process is still starting")
        if isinstance(command, Connect):
            self.notifications.on_user_connect(time.monotonic())
            await connection.connect_to_server()
            return Ok()
        if isinstance(command, Disconnect):
            self.notifications.on_user_disconnect(time.monotonic())
            await connection.disconnect_from_server()
            return Ok()
        if isinstance(command, Login):
            return await self._login(connection, command)
        if isinstance(command, Logout):
            tokens = connection.tokens
            handed_back = await sign_out(
                connection.address.http_base, tokens.refresh_token, client_id=connection.client_id
            )
            self.token_store.save(signed_out(tokens, handed_back))
            await connection.set_tokens(signed_out(tokens, handed_back))
            log.info("signed out; continuing as guest")
            return Ok()
        if isinstance(command, OpenWindow):
            if not can_show_windows():
                return Failed(code="no_display", message="no display: windows cannot be shown here")
            return Ok(data={"host": self.windows.open()})
        if isinstance(command, ReportWindow):
            if self.windows.on_report(command.state) and self._window_error is not None:
                self._window_error = None  # a window shows its page: the display works
                self._status_dirty()
            self._publish(command.state)
            return Ok()
        if isinstance(command, ReportTray):
            self.windows.on_tray(command.state)
            self._publish(command.state)
            return Ok()
        if isinstance(command, ControlWindows):
            # The windows answer on their own topics (ReportWindow); the asker waits there
            # for the windows named here.
            self._publish(command.control)
            windows = [{"host": ref.host, "window": ref.window} for ref in self.windows.windows()]
            tray = self.windows.tray
            return Ok(
                data={
                    "host": self.windows.host_pid,
                    "windows": windows,
                    "tray": None if tray is None else msgspec.to_builtins(tray),
                }
            )
        if isinstance(command, Shutdown):
            # Answer first, then stop: the asker should hear that it worked.
            asyncio.get_running_loop().call_soon(self.stop)
            return Ok()
        return Failed(code="unsupported", message=f"{type(command).__name__} is not handled here")

    async def _login(self, connection: ServerConnection, command: Login) -> IpcReply:
        try:
            signed = await sign_in(
                connection.address.http_base,
                command.identifier,
                command.password,
                client_id=connection.client_id,
                keep_guest_token=connection.tokens.guest_token,
                proof_refresh_token=connection.tokens.refresh_token,
            )
        except SignInFailed as failure:
            log.info("sign-in as %s refused: %s", command.identifier, failure.code)
            return Failed(code=failure.code, message=failure.message)
        # On disk before use: a crash right after must not lose the new session.
        self.token_store.save(signed.tokens)
        await connection.set_tokens(signed.tokens)
        log.info("signed in as %s", signed.tokens.username)
        return Ok(data={"username": signed.tokens.username})
