"""``log-monitor-server``: the reference server's command line.

Subcommands (``serve`` is the default when none is given):

- ``serve``: run the server (loopback unless ``--host`` says otherwise);
- ``add-user NAME``: create a user, password from a prompt or ``--password-stdin``;
- ``revoke NAME``: revoke every session of a user (their refresh tokens stop working);
- ``delete-user NAME``: delete a user and end their sessions; their tokens stop working;
- ``dump``: print stored chunk text in ``seq`` order, byte for byte, or as JSON lines;
- ``migrate``: create or upgrade the database's schema (PostgreSQL needs it before
  ``serve``; SQLite is upgraded when opened, and ``migrate`` does it without serving).

Every command works on the data dir's SQLite file, or with ``--database postgresql://…``
(or ``$LOG_MONITOR_SERVER_DATABASE``) on a PostgreSQL database shared by several nodes.
``serve --redis redis://…`` (or ``$LOG_MONITOR_SERVER_REDIS``) joins the nodes through
Redis; ``revoke`` and ``delete-user`` with it end the user's open sessions on every node
at once, not only at their next chunk.

Every failure a person can cause ends in one sentence on stderr and exit status 1 or 2;
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import platformdirs

from main_process.version import client_version
from protocol import DEFAULT_SOCKETIO_PATH
from server.app import (
    DEFAULT_MAX_CHUNK_BYTES,
    DEFAULT_PORT,
    RunningServer,
    ServerConfig,
    tune_garbage_collector,
)
from server.cluster import announce_sessions_ended, user_room
from server.connection_limits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    ConnectionLimits,
    raise_descriptor_limit,
)
from server.group_commit import DEFAULT_MAX_BATCH
from server.passwords import hash_password
from server.storage import (
    SCHEMA_VERSION,
    Database,
    StorageError,
    Store,
    is_postgresql_url,
    open_data_dir,
    open_store,
)

PROG = "log-monitor-server"
SUBCOMMANDS = ("serve", "add-user", "revoke", "delete-user", "dump", "migrate")
MAX_USER_NAME_CHARS = 64


def default_data_dir() -> Path:
    from_env = os.environ.get("LOG_MONITOR_SERVER_DATA_DIR")
    if from_env:
        return Path(from_env)
    return Path(platformdirs.user_data_dir("log-monitor-server", appauthor=False))


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _finite_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a number of seconds greater than 0")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Reference log-monitor-server: Socket.IO namespace /client plus the HTTP auth API.",
    )
    # The server ships in the client's distribution: one version for both.
    parser.add_argument("--version", action="version", version=f"{PROG} {client_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where the SQLite database and signing secret live "
            "(default: $LOG_MONITOR_SERVER_DATA_DIR or the platform's user data dir)",
        )
        p.add_argument(
            "--database",
            default=os.environ.get("LOG_MONITOR_SERVER_DATABASE") or None,
            metavar="URL",
            help="a postgresql:// URL instead of the data dir's SQLite file, shared by "
            "several nodes (default: $LOG_MONITOR_SERVER_DATABASE)",
        )

    def with_redis(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument(
            "--redis",
            default=os.environ.get("LOG_MONITOR_SERVER_REDIS") or None,
            metavar="URL",
            help=f"a redis:// URL: {what} (default: $LOG_MONITOR_SERVER_REDIS)",
        )

    serve = sub.add_parser("serve", help="run the server (the default command)")
    with_data_dir(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 picks one)",
    )
    serve.add_argument(
        "--socketio-path",
        default=DEFAULT_SOCKETIO_PATH,
        help=f"Socket.IO path (default {DEFAULT_SOCKETIO_PATH})",
    )
    serve.add_argument(
        "--access-ttl",
        type=_positive_float,
        default=900.0,
        metavar="SECONDS",
        help="lifetime of access tokens (default 900)",
    )
    serve.add_argument(
        "--max-chunk-bytes",
        type=int,
        default=DEFAULT_MAX_CHUNK_BYTES,
        help=f"largest chunk accepted, in UTF-8 bytes (default {DEFAULT_MAX_CHUNK_BYTES})",
    )
    serve.add_argument(
        "--processed-events",
        action="store_true",
        help="emit a processed_event to the client for every stored chunk",
    )
    serve.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help='write {"url", "pid"} as JSON to this file once listening',
    )
    serve.add_argument(
        "--max-connections",
        type=_count(1),
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"connections held at once (default {DEFAULT_MAX_CONNECTIONS}; "
        "never more than half the process's descriptor limit)",
    )
    serve.add_argument(
        "--max-connections-per-peer",
        type=_count(0),
        default=DEFAULT_MAX_CONNECTIONS_PER_PEER,
        metavar="N",
        help=f"connections from one address (default {DEFAULT_MAX_CONNECTIONS_PER_PEER}; "
        "0: no such limit, e.g. behind a reverse proxy on this machine)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=_finite_seconds,
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="time a connection has to send a whole request, or to connect to a Socket.IO "
        f"namespace over a WebSocket (default {DEFAULT_HANDSHAKE_TIMEOUT:g})",
    )
    serve.add_argument(
        "--public-stats",
        action="store_true",
        help="answer GET /api/stats to everyone (default: only to direct requests from "
        "this machine)",
    )
    with_redis(serve, "nodes sharing one database reach each other's connections through it")
    serve.add_argument(
        "--commit-batch",
        type=_count(1),
        default=DEFAULT_MAX_BATCH,
        metavar="N",
        help=f"chunks committed in one transaction at most (default {DEFAULT_MAX_BATCH}; "
        "1: a commit per chunk)",
    )
    serve.add_argument(
        "--commit-wait",
        type=_milliseconds,
        default=0.0,
        metavar="MS",
        help="milliseconds a commit waits for more chunks (default 0: it takes what "
        "arrived while the previous one ran)",
    )
    serve.add_argument(
        "--ws-compression",
        action="store_true",
        help="compress WebSocket messages with clients that offer it (permessage-deflate; "
        "default off: it saves bandwidth but costs CPU at both ends and memory per connection)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log every connection")

    add_user = sub.add_parser("add-user", help="create a user (or change a password with --update)")
    with_data_dir(add_user)
    add_user.add_argument("name")
    add_user.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add_user.add_argument(
        "--update", action="store_true", help="change the password of an existing user"
    )

    revoke = sub.add_parser("revoke", help="revoke every session of a user")
    with_data_dir(revoke)
    with_redis(revoke, "end the user's open connections on every node at once")
    revoke.add_argument("name")

    delete_user = sub.add_parser(
        "delete-user", help="delete a user; their sessions and tokens stop working at once"
    )
    with_data_dir(delete_user)
    with_redis(delete_user, "end the user's open connections on every node at once")
    delete_user.add_argument("name")

    dump = sub.add_parser("dump", help="print stored chunks in seq order")
    with_data_dir(dump)
    dump.add_argument("--client-id", default=None, help="only this client (default: every client)")
    dump.add_argument(
        "--json", action="store_true", help="one JSON object per chunk, with metadata"
    )

    migrate = sub.add_parser("migrate", help="create or upgrade the database's schema")
    with_data_dir(migrate)
    return parser


def _milliseconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be a number of milliseconds from 0 to 1000")
    return value / 1000


class UsageError(Exception):
    pass


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise UsageError("the two passwords differ.")
    if not password:
        raise UsageError("the password is empty.")
    return password


async def _with_store(args: argparse.Namespace, data_dir: Path) -> Store:
    store = open_store(args.database, data_dir)
    try:
        await store.open()
    except BaseException:
        await store.aclose()
        raise
    return store


def _add_user(args: argparse.Namespace, data_dir: Path) -> int:
    name = args.name.strip()
    if not name or len(name) > MAX_USER_NAME_CHARS or not name.isprintable():
        raise UsageError(f"a user name must be 1 to {MAX_USER_NAME_CHARS} printable characters.")
    password_hash = hash_password(_read_password(args.password_stdin))

    async def add() -> str:
        store = await _with_store(args, data_dir)
        try:
            if args.update:
                if not await store.set_password(name, password_hash):
                    raise UsageError(f"no user named {name!r}.")
                return f"password of {name} changed"
            user = await store.add_user(name, password_hash)
            return f"user {user.username} created ({user.id})"
        finally:
            await store.aclose()

    print(asyncio.run(add()))
    return 0


def _announce(args: argparse.Namespace, user_id: str) -> str:
    """Tell every node listening on Redis to end the user's open connections now."""
    if not args.redis:
        return ""
    try:
        nodes = asyncio.run(announce_sessions_ended(args.redis, user_room(user_id)))
    except ConnectionError as exc:
        # The database says revoked; open connections learn it at their next chunk.
        print(f"{PROG}: {exc}; open connections end at their next chunk.", file=sys.stderr)
        return ""
    return f"; told {nodes} server node(s)"


def _revoke(args: argparse.Namespace, data_dir: Path) -> int:
    async def revoke() -> tuple[str, str, int]:
        store = await _with_store(args, data_dir)
        try:
            user = await store.find_user(args.name)
            if user is None:
                raise UsageError(f"no user named {args.name!r}.")
            return user.id, user.username, await store.revoke_user_sessions(user.id)
        finally:
            await store.aclose()

    user_id, username, count = asyncio.run(revoke())
    told = _announce(args, user_id)
    print(f"revoked {count} session(s) of {username}{told}")
    return 0


def _delete_user(args: argparse.Namespace, data_dir: Path) -> int:
    # A running server reads the same database at every handshake, refresh and chunk of a
    # user's connection, so this takes effect there at once, as ``revoke`` does; with
    # --redis, open connections that send nothing end at once too.
    async def delete() -> tuple[str, str, int] | None:
        store = await _with_store(args, data_dir)
        try:
            deleted = await store.delete_user(args.name)
        finally:
            await store.aclose()
        if deleted is None:
            return None
        user, ended = deleted
        return user.id, user.username, ended

    result = asyncio.run(delete())
    if result is None:
        raise UsageError(f"no user named {args.name!r}.")
    user_id, username, ended = result
    told = _announce(args, user_id)
    print(f"deleted user {username}; ended {ended} session(s){told}")
    return 0


def _dump(args: argparse.Namespace, data_dir: Path) -> int:
    out = sys.stdout.buffer

    async def dump() -> None:
        store = await _with_store(args, data_dir)
        try:
            client_ids = [args.client_id] if args.client_id else await store.client_ids()
            for client_id in client_ids:
                async for chunk in store.iter_chunks(client_id):
                    if args.json:
                        record = {
                            "clientId": chunk.client_id,
                            "chunkId": chunk.chunk_id,
                            "seq": chunk.seq,
                            "source": None
                            if chunk.source_path is None
                            else {"path": chunk.source_path, "offset": chunk.source_offset},
                            "sentAt": chunk.sent_at,
                            "receivedAt": chunk.received_at,
                            "identity": chunk.identity,
                            "chunk": chunk.text,
                        }
                        out.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
                    else:
                        out.write(chunk.text.encode("utf-8"))
            out.flush()
        finally:
            await store.aclose()

    try:
        asyncio.run(dump())
    except BrokenPipeError:
        # `dump | head` is normal use; the closed pipe is not an error worth a trace.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    return 0


def _migrate(args: argparse.Namespace, data_dir: Path) -> int:
    if args.database is None:
        Database(open_data_dir(data_dir)).close()  # opening upgrades it
        print(f"{data_dir / 'server.sqlite3'}: schema version {SCHEMA_VERSION}")
        return 0
    if not is_postgresql_url(args.database):
        open_store(args.database, data_dir)  # raises the sentence about the URL
    from server.storage_postgres import migrate, shown_url

    before, after = asyncio.run(migrate(args.database))
    if before == after:
        print(f"{shown_url(args.database)}: schema version {after}, nothing to do")
    else:
        print(f"{shown_url(args.database)}: schema version {before} -> {after}")
    return 0


def _serve(args: argparse.Namespace, data_dir: Path) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("log_monitor_server").setLevel(
        logging.INFO if args.verbose else logging.WARNING
    )
    if args.max_chunk_bytes <= 0:
        raise UsageError("--max-chunk-bytes must be greater than 0.")
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"{PROG}: listening on {args.host}, beyond this machine", file=sys.stderr)
    raise_descriptor_limit(args.max_connections)
    tune_garbage_collector()
    if args.database is not None and not is_postgresql_url(args.database):
        raise UsageError("--database takes a postgresql:// URL.")
    config = ServerConfig(
        data_dir=data_dir,
        host=args.host,
        port=args.port,
        socketio_path=args.socketio_path,
        access_ttl_seconds=args.access_ttl,
        max_chunk_bytes=args.max_chunk_bytes,
        processed_events=args.processed_events,
        ready_file=args.ready_file,
        connection_limits=ConnectionLimits(
            max_connections=args.max_connections,
            max_connections_per_peer=args.max_connections_per_peer,
            handshake_timeout=args.handshake_timeout,
        ),
        public_stats=args.public_stats,
        database=args.database,
        redis=args.redis,
        commit_max_batch=args.commit_batch,
        commit_wait=args.commit_wait,
        ws_compression=args.ws_compression,
    )
    try:
        server = RunningServer(config)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}.") from None
    if args.database is None:
        where = f"data in {data_dir}"
    else:
        from server.storage_postgres import shown_url

        where = f"data in {shown_url(args.database)}"
    if args.redis:
        from server.cluster import shown_redis_url

        where += f", nodes joined through {shown_redis_url(args.redis)}"

    async def serve() -> None:
        await server.open()
        print(f"{PROG}: listening on {server.url} ({where})", file=sys.stderr, flush=True)
        await server.run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # `serve` is the default: `log-monitor-server --port 0` means `serve --port 0`.
    if not arguments or (
        arguments[0] not in SUBCOMMANDS and arguments[0] not in ("-h", "--help", "--version")
    ):
        arguments.insert(0, "serve")
    args = build_parser().parse_args(arguments)
    data_dir: Path = args.data_dir or default_data_dir()
    commands = {
        "serve": _serve,
        "add-user": _add_user,
        "revoke": _revoke,
        "delete-user": _delete_user,
        "dump": _dump,
        "migrate": _migrate,
    }
    try:
        return commands[args.command](args, data_dir)
    except (UsageError, StorageError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
