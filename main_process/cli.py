"""``log-monitor``: the command line of the client.

- ``run``: the main process (sources → spool → server; status for every viewer);
- ``status``: a terminal viewer over ipc (``--json``; ``--once``, the default, or ``--follow``);
- ``stop``: ask the running main process to stop cleanly (the spool stays on disk);
- ``login`` / ``logout``: through the running main process, or directly when none runs
  (to the server ``run`` would use: the same settings file, environment and flag);
- ``windows`` / ``screenshot``: diagnostics of the open windows (and of the tray icon).

Every subcommand takes ``--data-dir`` (else ``$LOG_MONITOR_DATA_DIR``, else the platform's
user data dir): one main process per data dir, found through its instance lock (asked,
never taken, so looking never gets in a starting main process's way) and its ipc
endpoints. Every failure a person can cause is one sentence on stderr and an exit
status (1: it did not work, 2: the command line or settings are wrong); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from ipc.commands import CommandTimeoutError, ReplyError, SyncCommandClient
from ipc.endpoints import EndpointError
from ipc.host import connect_subscriber, connect_sync_client
from ipc.inspection import InspectionError, inspect_windows
from ipc.instance import InstanceLock, ask_primary_to_open_window
from ipc.messages import (
    TOPIC_STATS,
    TOPIC_STATUS,
    Command,
    Failed,
    GetStatus,
    Login,
    Logout,
    Ok,
    Reply,
    Shutdown,
    Stats,
    Status,
    TrayState,
    WindowAction,
    WindowAnswer,
    WindowsReport,
)
from main_process.credentials import IdentityError, load_or_create_client_id
from main_process.embedded_server import EmbeddedServer, EmbeddedServerError
from main_process.keychain import AnyTokenStore
from main_process.log_file import add_log_file, configure_logging, last_lines, log_path
from main_process.malloc_settings import reuse_freed_buffers
from main_process.paths import DataPaths, ensure_private_dir, resolve_data_dir
from main_process.settings import (
    GAMES,
    SYMLINK_POLICIES,
    TOKEN_STORES,
    Settings,
    SettingsError,
    SettingsLayer,
    checked_flag_layer,
    merge,
    read_environment_layer,
    read_file_layer,
)
from main_process.spool.chunks import SpoolError
from main_process.start_imports import import_client_socketio
from main_process.version import client_version

PROG = "log-monitor"
EXIT_FAILED = 1
EXIT_USAGE = 2

# A second `run` finding the lock held waits this long for the holder to answer or to let
# go: a main process can hold the lock for seconds before it answers (opening a large
# spool, starting the embedded server), and `login` holds it while it signs in.
HANDOVER_WAIT_SECONDS: Final = 30.0
HANDOVER_ASK_SECONDS: Final = 2.0
HANDOVER_POLL_SECONDS: Final = 0.05


class CommandError(Exception):
    """A subcommand that could not do its job; the message is one sentence."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- parser


_OFFLINE_SERVER_HELP = (
    "server URL when no main process runs (default: as for run: $LOG_MONITOR_SERVER, the "
    "settings file, else the embedded server)"
)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the instance's data dir (default: $LOG_MONITOR_DATA_DIR or the platform's user data dir)",
    )


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="settings file (TOML; default: $LOG_MONITOR_CONFIG or config.toml in the "
        "platform's user config dir)",
    )


def _add_token_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-store",
        choices=TOKEN_STORES,
        default=None,
        help="where the tokens live: auto (the OS keychain when one is usable, else the "
        "0600 file; the default), keychain, file",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Follow log files and ship every line, exactly once, to a log server.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {client_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run the main process",
        description="Run the main process: follow SOURCEs, ship them to the server, show status "
        "in windows. Without --server, an embedded reference server is started on 127.0.0.1.",
    )
    _add_data_dir(run)
    run.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="a file, a glob, or - for standard input"
    )
    _add_config(run)
    run.add_argument(
        "--server", default=None, help="server URL: http(s):// or ws(s):// (default: embedded)"
    )
    run.add_argument("--socketio-path", default=None, help="Socket.IO path (default /socket.io/)")
    run.add_argument("--namespace", default=None, help="Socket.IO namespace (default /client)")
    run.add_argument(
        "--backlog",
        action="append",
        default=None,
        metavar="DIR_OR_GLOB",
        help="older logs to upload once each",
    )
    run.add_argument("--headless", action="store_true", default=None, help="open no windows")
    run.add_argument(
        "--windows",
        type=int,
        default=None,
        metavar="N",
        help="windows to open (default 1 with a display; 0 with a tray: the tray alone)",
    )
    run.add_argument(
        "--exit-with-windows",
        action="store_true",
        default=None,
        help="stop when the last window closes",
    )
    run.add_argument(
        "--window", type=int, default=None, metavar="N", help="chunks in flight (default 8)"
    )
    run.add_argument(
        "--ack-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for an ack (default 30)",
    )
    run.add_argument(
        "--ping-interval",
        type=float,
        default=None,
        metavar="S",
        help="heartbeat period (default 20)",
    )
    run.add_argument(
        "--silence-timeout",
        type=float,
        default=None,
        metavar="S",
        help="silence before reconnecting (default 30)",
    )
    run.add_argument(
        "--spool-max-mb", type=float, default=None, metavar="MB", help="spool bound (default 256)"
    )
    run.add_argument(
        "--chunk-linger-ms",
        type=float,
        default=None,
        metavar="MS",
        help="the longest lines wait to be grouped while a chunk awaits its ack (default 50; "
        "with nothing awaiting an ack a line goes at once)",
    )
    run.add_argument(
        "--poll", action="store_true", default=None, help="poll files instead of waiting for events"
    )
    run.add_argument(
        "--from-end", action="store_true", default=None, help="start new files at their end"
    )
    _add_token_store(run)
    run.add_argument(
        "--encoding",
        default=None,
        metavar="ENC",
        help="the followed files' encoding: utf-8 (the default), latin-1, cp1252, utf-16 (by "
        "its byte-order mark), utf-16-le, utf-16-be; per pattern: the encodings setting",
    )
    run.add_argument(
        "--game",
        choices=GAMES,
        default=None,
        help="also follow a game's logs, found where the game keeps them (star-citizen: "
        "every channel's Game.log, and its logbackups/ as backlog)",
    )
    run.add_argument(
        "--game-dir",
        default=None,
        metavar="DIR",
        help="where the game is installed (default: the usual places, Wine prefixes too)",
    )
    run.add_argument(
        "--follow-symlinks",
        choices=SYMLINK_POLICIES,
        default=None,
        help="which followed files may be symbolic links: named (a path named without a "
        "wildcard that was a link when first seen; the default), never, always",
    )
    run.add_argument(
        "--no-notifications",
        dest="notifications",
        action="store_false",
        default=None,
        help="no desktop notifications (sign-outs, a full buffer, refused chunks, an "
        "unreachable server)",
    )
    run.add_argument(
        "--notify-unreachable-after",
        type=float,
        default=None,
        metavar="S",
        help="seconds without a connection before a notification says so (default 300)",
    )
    run.add_argument(
        "--demo", action="store_true", help="also ship a generated game log (what `make run` shows)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log debugging details")

    status = sub.add_parser(
        "status",
        help="show the running main process's status",
        description="Show the running main process's status. Exit status 1 when none runs "
        "for the data dir (or it does not answer).",
    )
    _add_data_dir(status)
    status.add_argument("--json", action="store_true", help="JSON instead of text")
    mode = status.add_mutually_exclusive_group()
    mode.add_argument(
        "--once",
        dest="mode",
        action="store_const",
        const="once",
        help="print the status once and exit (the default)",
    )
    mode.add_argument(
        "--follow",
        dest="mode",
        action="store_const",
        const="follow",
        help="print every change until interrupted",
    )
    status.set_defaults(mode="once")

    stop = sub.add_parser("stop", help="stop the running main process (the spool is kept)")
    _add_data_dir(stop)
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it to end")

    login = sub.add_parser(
        "login",
        help="sign in to the server",
        description="Sign in. Through the running main process when there is one; otherwise "
        "directly at the server `run` would use (--server, else $LOG_MONITOR_SERVER, else the "
        "settings file's server, else the embedded server).",
    )
    _add_data_dir(login)
    _add_config(login)
    login.add_argument(
        "--identifier", default=None, help="user name or e-mail (asked when missing)"
    )
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    login.add_argument("--server", default=None, help=_OFFLINE_SERVER_HELP)
    _add_token_store(login)

    logout = sub.add_parser(
        "logout",
        help="sign out and continue as guest",
        description="Sign out. Through the running main process when there is one; otherwise "
        "directly at the server `run` would use (as for login).",
    )
    _add_data_dir(logout)
    _add_config(logout)
    logout.add_argument("--server", default=None, help=_OFFLINE_SERVER_HELP)
    _add_token_store(logout)

    windows = sub.add_parser("windows", help="list the open windows and what each one's page shows")
    _add_data_dir(windows)
    windows.add_argument("--json", action="store_true", help="JSON instead of text")
    windows.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the windows to answer"
    )

    screenshot = sub.add_parser("screenshot", help="save a PNG of each open window")
    _add_data_dir(screenshot)
    screenshot.add_argument("directory", type=Path, metavar="DIR", help="where to save them")
    screenshot.add_argument(
        "--timeout", type=float, default=20.0, help="seconds to wait for the windows to answer"
    )

    logs = sub.add_parser(
        "logs",
        help="print the log file's last lines (or its path, or follow it)",
        description="The log of the main process (or of the windows, --windows), kept in the "
        "platform's user log dir, 1 MiB then rotated: the file to attach to a bug report.",
    )
    _add_data_dir(logs)
    logs.add_argument("--path", action="store_true", help="print the file's path only")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="print new lines as they come, until Ctrl-C"
    )
    logs.add_argument(
        "-n", "--lines", type=int, default=50, metavar="N", help="how many last lines (default 50)"
    )
    logs.add_argument(
        "--windows", action="store_true", help="the renderer host's log instead of the main's"
    )

    autostart = sub.add_parser(
        "autostart",
        help="start at login (and the launcher in the application menu): on, off or status",
        description="on: start `log-monitor run --windows 0` at login (the sources from the "
        "settings, no window, the tray where the desktop has one) and add a launcher to the "
        "application menu; off: remove what `on` wrote and nothing else; status: say which.",
    )
    _add_data_dir(autostart)
    autostart.add_argument("action", choices=("on", "off", "status"))
    autostart.add_argument(
        "--config", type=Path, default=None, help="settings file the entry should use"
    )
    return parser


# ---------------------------------------------------------------------------- helpers


def _data_dir(args: argparse.Namespace) -> Path:
    return resolve_data_dir(args.data_dir)


def is_running(data_dir: Path) -> bool:
    """Whether a main process holds the data dir's instance lock.

    The lock is queried, not taken: a probe that took it, even for an instant, would make a
    ``run`` starting in that instant find it held.
    """
    if not data_dir.exists():
        return False
    return InstanceLock(data_dir).is_locked()


def _client(data_dir: Path) -> SyncCommandClient:
    if not is_running(data_dir):
        raise CommandError(f"log-monitor is not running for {data_dir}.")
    try:
        return connect_sync_client(data_dir)
    except EndpointError as exc:
        raise CommandError(
            f"log-monitor is starting or unreachable for {data_dir}: {exc}"
        ) from None


def _request(data_dir: Path, command: Command, timeout: float = 15.0) -> Reply:
    with _client(data_dir) as client:
        try:
            return client.request(command, timeout=timeout)
        except CommandTimeoutError:
            raise CommandError(
                f"the main process for {data_dir} did not answer within {timeout:g} s."
            ) from None


def _human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{count} B"


STATE_WORDS = {
    "connected": "connected",
    "connecting": "connecting…",
    "disconnected": "disconnected",
    "error": "error",
}


def format_status(status: Status, stats: Stats | None = None) -> str:
    who = status.username if status.identity == "user" else (status.identity or "not signed in")
    state = STATE_WORDS[status.state]
    if status.state == "disconnected" and status.next_retry_ms is not None:
        state += f" (attempt {status.attempt}, retrying in {status.next_retry_ms / 1000:.1f} s)"
    rows = [
        ("state", f"{state} as {who}" if status.authenticated else state),
        ("server", status.server),
        ("client id", status.client_id),
        ("buffered", f"{status.buffered_chunks:,} chunks, {_human_bytes(status.buffered_bytes)}"),
        ("sent", f"{status.sent_chunks:,} chunks, {_human_bytes(status.sent_bytes)}"),
        ("dead-lettered", f"{status.dead_lettered:,}"),
        ("tokens in", status.credential_store or "-"),
        *([("game", status.game)] if status.game else []),
        ("windows", str(status.windows)),
    ]
    if status.paused:
        rows.append(("reading", "paused: the spool is full"))
    if stats is not None:
        rows.append(("send rate", f"{_human_bytes(int(stats.send_rate_bytes))}/s"))
        if stats.files_total:
            done = stats.bytes_done / stats.bytes_total if stats.bytes_total else 1.0
            bar = "#" * int(done * 30)
            rows.append(
                (
                    "backlog",
                    f"[{bar:<30}] {done:6.1%}  {stats.files_done}/{stats.files_total} files, "
                    f"{_human_bytes(stats.bytes_done)} of {_human_bytes(stats.bytes_total)}",
                )
            )
    rows.append(("last error", status.last_error or "-"))
    return "\n".join(f"{name:<14}{value}" for name, value in rows)


# ---------------------------------------------------------------------------- commands


def _settings(args: argparse.Namespace, flag_layer: SettingsLayer) -> Settings:
    """The settings file (``--config``, else ``$LOG_MONITOR_CONFIG``, else the platform's
    default), overridden by ``LOG_MONITOR_*``, overridden by ``flag_layer``: one order for
    every subcommand, so ``login`` reaches the server ``run`` ships to."""
    environ = os.environ
    file_layer = read_file_layer(args.config, environ)
    env_layer = read_environment_layer(environ)
    return merge(_data_dir(args), file_layer, env_layer, checked_flag_layer(flag_layer))


def _settings_for_run(args: argparse.Namespace) -> Settings:
    sources = [s for s in args.sources if s != "-"] or None
    flag_layer = SettingsLayer(
        server=args.server,
        socketio_path=args.socketio_path,
        namespace=args.namespace,
        sources=sources,
        backlog=args.backlog,
        headless=args.headless,
        windows=args.windows,
        exit_with_windows=args.exit_with_windows,
        window=args.window,
        ack_timeout=args.ack_timeout,
        ping_interval=args.ping_interval,
        silence_timeout=args.silence_timeout,
        spool_max_mb=args.spool_max_mb,
        chunk_linger_ms=args.chunk_linger_ms,
        poll=args.poll,
        from_end=args.from_end,
        log_level="debug" if args.verbose else None,
        follow_symlinks=args.follow_symlinks,
        token_store=args.token_store,
        notifications=args.notifications,
        notify_unreachable_after=args.notify_unreachable_after,
        game=args.game,
        game_dir=args.game_dir,
        encoding=args.encoding,
    )
    settings = _settings(args, flag_layer)
    # Absolute patterns: checkpoints name files by path, whatever the working directory.
    return dataclasses.replace(
        settings,
        sources=tuple(_absolute(p) for p in settings.sources),
        backlog=tuple(_absolute(p) for p in settings.backlog),
        encodings={_absolute(p): e for p, e in settings.encodings.items()},
    )


def _absolute(pattern: str) -> str:
    return os.path.abspath(os.path.expanduser(pattern))


def cmd_run(args: argparse.Namespace) -> int:
    # python-socketio before the main process imports it, without the Redis managers only
    # a server uses (~90 ms of importing redis; see ``start_imports``).
    import_client_socketio()
    from main_process.app import MainProcess, RunOptions

    settings = _settings_for_run(args)
    configure_logging(settings.log_level)
    data_dir = ensure_private_dir(settings.data_dir)
    lock = InstanceLock(data_dir)
    handed_over = _become_primary_or_hand_over(data_dir, lock)
    if handed_over is not None:
        return handed_over
    add_log_file(data_dir, "main")
    # Shipping frees and takes back large buffers all the time; see ``malloc_settings``.
    reuse_freed_buffers()
    try:
        main = MainProcess(settings, RunOptions(read_stdin="-" in args.sources, demo=args.demo))
        return asyncio.run(main.run())
    except KeyboardInterrupt:
        return 0
    finally:
        lock.release()


def _become_primary_or_hand_over(data_dir: Path, lock: InstanceLock) -> int | None:
    """Take the instance lock (None: this process is the primary now), or hand over to the
    primary that holds it (Electron's single-instance lock: ask it for a window, exit 0).

    A held lock alone does not prove a primary is there to take over: its holder may be a
    main process that has not bound its sockets yet or is stopping, or a ``login`` signing
    in. So this waits until the holder answers (hand over) or lets go (take the lock), and
    never exits 0 without a main process. A holder that does neither within
    ``HANDOVER_WAIT_SECONDS`` is reported in one sentence with exit status 1.
    """
    deadline = time.monotonic() + HANDOVER_WAIT_SECONDS
    starting: Failed | None = None
    waiting_said = False
    while True:
        if lock.acquire():
            return None
        reply = _ask_for_window(data_dir)
        if isinstance(reply, Failed) and reply.code == "unavailable":
            starting = reply  # it runs, but cannot open a window before it has started
        elif reply is not None:
            return _report_handover(data_dir, lock, reply)
        if time.monotonic() >= deadline:
            break
        if not waiting_said:
            # Say why nothing happens yet: the wait can last seconds.
            print(
                f"{PROG}: {_holder(lock)} holds the instance lock of {data_dir}; waiting up to "
                f"{HANDOVER_WAIT_SECONDS:g} s for it to answer or to let go.",
                file=sys.stderr,
                flush=True,
            )
            waiting_said = True
        time.sleep(HANDOVER_POLL_SECONDS)
    if starting is not None:
        return _report_handover(data_dir, lock, starting)
    print(
        f"{PROG}: {_holder(lock)} holds the instance lock of {data_dir} but has not answered for "
        f"{HANDOVER_WAIT_SECONDS:g} s; stop it, or try again once it has started.",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _holder(lock: InstanceLock) -> str:
    pid = lock.holder_pid()
    return f"process {pid}" if pid else "another process"


def _ask_for_window(data_dir: Path) -> Reply | None:
    """The primary's answer to ``OpenWindow``, or None when no primary answered."""
    try:
        return ask_primary_to_open_window(data_dir, timeout=HANDOVER_ASK_SECONDS)
    except (EndpointError, CommandTimeoutError, ReplyError):
        # No endpoints saved yet, or stale ones of a main process that is gone.
        return None


def _report_handover(data_dir: Path, lock: InstanceLock, reply: Reply) -> int:
    who = _holder(lock)
    if isinstance(reply, Failed):
        print(
            f"{PROG}: already running for {data_dir} ({who}); no window opened: {reply.message}.",
            file=sys.stderr,
        )
    else:
        print(
            f"{PROG}: already running for {data_dir} ({who}); asked it to open a window.",
            file=sys.stderr,
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if args.mode == "follow":
        return _follow_status(data_dir, args.json)
    reply = _request(data_dir, GetStatus(), timeout=5.0)
    if not isinstance(reply, Ok) or reply.data is None:
        raise CommandError(
            f"no status yet: {reply.message if isinstance(reply, Failed) else 'empty reply'}."
        )
    if args.json:
        print(json.dumps(reply.data))
    else:
        print(format_status(msgspec.convert(reply.data, type=Status)))
    return 0


def _follow_status(data_dir: Path, as_json: bool) -> int:
    if not is_running(data_dir):
        raise CommandError(f"log-monitor is not running for {data_dir}.")

    async def follow() -> None:
        subscriber = connect_subscriber(data_dir, topics=(TOPIC_STATUS, TOPIC_STATS))
        stats: Stats | None = None
        try:
            async for delivery in subscriber:
                message = delivery.message
                if isinstance(message, Stats):
                    stats = message
                    if as_json:
                        print(json.dumps(msgspec.to_builtins(message)), flush=True)
                elif isinstance(message, Status):
                    if as_json:
                        print(json.dumps(msgspec.to_builtins(message)), flush=True)
                    else:
                        print(format_status(message, stats) + "\n", flush=True)
        finally:
            await subscriber.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    reply = _request(data_dir, Shutdown(), timeout=10.0)
    if isinstance(reply, Failed):
        raise CommandError(f"the main process refused to stop: {reply.message}.")
    deadline = time.monotonic() + args.timeout
    # The lock is released only when the process has closed its spool and sockets.
    while is_running(data_dir):
        if time.monotonic() > deadline:
            raise CommandError(
                f"the main process for {data_dir} is still running after {args.timeout:g} s."
            )
        time.sleep(0.05)
    print(f"{PROG}: stopped")
    return 0


def _read_credentials(args: argparse.Namespace) -> tuple[str, str]:
    identifier = args.identifier
    if identifier is None:
        if not sys.stdin.isatty() or args.password_stdin:
            raise CommandError(
                "--identifier is needed when the password comes from standard input.", EXIT_USAGE
            )
        identifier = input("User name or e-mail: ").strip()
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        password = getpass.getpass("Password: ")
    if not identifier or not password:
        raise CommandError("the user name and the password must not be empty.", EXIT_USAGE)
    return identifier, password


def cmd_login(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    identifier, password = _read_credentials(args)
    if is_running(data_dir):
        reply = _request(data_dir, Login(identifier=identifier, password=password), timeout=30.0)
        if isinstance(reply, Failed):
            raise CommandError(f"sign-in failed: {reply.message}")
        username = (
            (reply.data or {}).get("username", identifier) if isinstance(reply, Ok) else identifier
        )
    else:
        username = _offline(
            data_dir,
            _offline_settings(args),
            lambda base, store, client_id: _sign_in_offline(
                base, store, client_id, identifier, password
            ),
        )
    print(f"{PROG}: signed in as {username}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if is_running(data_dir):
        reply = _request(data_dir, Logout(), timeout=30.0)
        if isinstance(reply, Failed):
            raise CommandError(f"sign-out failed: {reply.message}")
    else:
        _offline(data_dir, _offline_settings(args), _sign_out_offline)
    print(f"{PROG}: signed out; continuing as guest")
    return 0


def _offline_settings(args: argparse.Namespace) -> Settings:
    """The settings ``run`` would use for these arguments: its server (None: the embedded
    one) and its token store."""
    return _settings(args, SettingsLayer(server=args.server, token_store=args.token_store))


def _offline(
    data_dir: Path, settings: Settings, action: Callable[[str, AnyTokenStore, str], Any]
) -> Any:
    """Run ``action(http_base, token_store, client_id)`` with no main process running.

    Holding the instance lock meanwhile keeps a main process from starting halfway and
    reading a token file that is about to change. With no server configured the embedded
    server is started just for this, on the same data as ``run`` would use. The tokens
    are where ``run`` would keep them (``keychain.open_token_store``).
    """
    from main_process.connection.server_connection import ServerAddress
    from main_process.keychain import open_token_store

    server = settings.server

    paths = DataPaths(ensure_private_dir(data_dir))
    lock = InstanceLock(data_dir)
    if not lock.acquire():
        raise CommandError(f"log-monitor started meanwhile for {data_dir}; try again.")
    embedded: EmbeddedServer | None = None
    try:
        client_id = load_or_create_client_id(paths.root)
        if server is None:
            embedded = EmbeddedServer(paths.server_data)
            server = embedded.start()
        try:
            base = ServerAddress.parse(server).http_base
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        opened = open_token_store(paths.tokens, paths.root, settings.token_store)
        return action(base, opened.store, client_id)
    finally:
        if embedded is not None:
            embedded.stop()
        lock.release()


def _sign_in_offline(
    base: str, store: AnyTokenStore, client_id: str, identifier: str, password: str
) -> str:
    from main_process.connection.auth_client import SignInFailed, sign_in

    held = store.load()
    try:
        signed = asyncio.run(
            sign_in(
                base,
                identifier,
                password,
                client_id=client_id,
                keep_guest_token=held.guest_token,
                proof_refresh_token=held.refresh_token,
            )
        )
    except SignInFailed as failure:
        raise CommandError(f"sign-in failed: {failure.message}") from None
    store.save(signed.tokens)
    return signed.tokens.username or identifier


def _sign_out_offline(base: str, store: AnyTokenStore, client_id: str) -> None:
    from main_process.connection.auth_client import sign_out, signed_out

    tokens = store.load()
    store.save(signed_out(tokens))
    # A server that binds client ids may hand back a guest token for this one.
    handed_back = asyncio.run(sign_out(base, tokens.refresh_token, client_id=client_id))
    if handed_back is not None:
        store.save(signed_out(tokens, handed_back))


def _inspect_windows(
    args: argparse.Namespace, action: WindowAction, **options: Any
) -> WindowsReport:
    data_dir = _data_dir(args)
    if not is_running(data_dir):
        raise CommandError(f"log-monitor is not running for {data_dir}.")
    try:
        return inspect_windows(data_dir, action, timeout=args.timeout, **options)
    except InspectionError as exc:
        raise CommandError(str(exc)) from None
    except CommandTimeoutError:
        raise CommandError(f"the main process for {data_dir} did not answer in time.") from None


def _ask_windows(
    args: argparse.Namespace, action: WindowAction, **options: Any
) -> tuple[WindowAnswer, ...]:
    return _inspect_windows(args, action, **options).windows


def format_tray(tray: TrayState) -> str:
    """One line saying what the tray icon shows (a ``TrayState``)."""
    if not tray.shown:
        return "tray: not shown" + ("" if tray.available else " (the desktop has no tray)")
    menu = ", ".join(item.text for item in tray.menu)
    return f"tray: shown, {tray.state or 'waiting'} ({tray.icon}); menu: {menu}"


def cmd_windows(args: argparse.Namespace) -> int:
    report = _inspect_windows(args, "report")
    answers = report.windows
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    if report.tray is not None:
        print(f"{PROG}: {format_tray(report.tray)}")
    if not answers:
        print(f"{PROG}: no windows are open")
        return 0
    print(f"{PROG}: renderer host pid {answers[0].host}")
    print(
        f"{'window':>6}  {'ready':<5}  {'state':<12}  {'attempt':>7}  {'signed in as':<16}  "
        f"{'buffered':>8}  {'sent':>8}  {'lines':>5}"
    )
    for answer in answers:
        view = answer.fields
        counters = view.get("counters") or {}
        attempt = view.get("attempt")
        print(
            f"{answer.window:>6}  {'yes' if answer.ready else 'no':<5}  "
            f"{view.get('state') or '?':<12}  {'-' if attempt is None else attempt:>7}  "
            f"{view.get('identityText') or '-':<16}  "
            f"{counters.get('bufferedChunks', '-')!s:>8}  {counters.get('sentChunks', '-')!s:>8}  "
            f"{view.get('lines', '-')!s:>5}" + ("" if answer.answered else "  (not answering)")
        )
    return 0


def cmd_screenshot(args: argparse.Namespace) -> int:
    directory = args.directory.expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    answers = _ask_windows(args, "screenshot", directory=directory)
    if not answers:
        raise CommandError("no windows are open.")
    failed = 0
    for answer in answers:
        if answer.ok and isinstance(answer.result, dict):
            print(answer.result.get("path"))
        else:
            failed += 1
            print(f"{PROG}: window {answer.window}: {answer.error}", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def cmd_logs(args: argparse.Namespace) -> int:
    path = log_path(_data_dir(args), "windows" if args.windows else "main")
    if args.path:
        print(path)
        return 0
    if args.lines < 0:
        raise CommandError("--lines must not be negative.", EXIT_USAGE)
    if not path.exists() and not args.follow:
        raise CommandError(f"there is no log yet at {path}.")
    lines, position = last_lines(path, args.lines)
    for line in lines:
        print(line, flush=True)
    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):
            _follow_log(path, position)
    return 0


def _follow_log(path: Path, position: int) -> None:
    """Print what is appended to ``path`` after byte ``position``, across its rotations,
    as it comes: the directory's change events wake this, and a look every second
    catches what was written before the watch began."""
    import watchfiles

    identity = _file_identity(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for _ in watchfiles.watch(
        path.parent,
        debounce=50,
        step=20,
        recursive=False,
        rust_timeout=1000,
        yield_on_timeout=True,
    ):
        current = _file_identity(path)
        if current != identity:  # rotated: the new file starts at its beginning
            identity, position = current, 0
        try:
            with path.open("rb") as file:
                file.seek(position)
                data = file.read()
        except FileNotFoundError:
            continue
        if data:
            position += len(data)
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def cmd_autostart(args: argparse.Namespace) -> int:
    from main_process.autostart import AutostartError, autostart_for, invocation

    entry = autostart_for(invocation(_data_dir(args), args.config))
    try:
        if args.action == "on":
            report = entry.enable()
        elif args.action == "off":
            report = entry.disable()
        else:
            report = entry.status()
    except AutostartError as exc:
        raise CommandError(str(exc)) from None
    print(f"{PROG}: autostart {'on' if report.enabled else 'off'}")
    if report.launcher:
        print(f"{PROG}: launcher in the application menu")
    for written in report.written:
        print(f"  {written}")
    for note in report.notes:
        print(f"{PROG}: {note}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "status": cmd_status,
    "stop": cmd_stop,
    "login": cmd_login,
    "logout": cmd_logout,
    "windows": cmd_windows,
    "screenshot": cmd_screenshot,
    "autostart": cmd_autostart,
    "logs": cmd_logs,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except (SpoolError, IdentityError, EndpointError, EmbeddedServerError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"{PROG}: {exc.strerror or exc} ({exc.filename or 'no file'}).", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
