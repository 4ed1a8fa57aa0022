"""A local cluster for a person and for the tests: PostgreSQL, Redis and server nodes
behind HAProxy, all on loopback, all in temporary directories (``make cluster``).

``python -m server.local_cluster [--nodes 3] [--port 5324]`` starts, from Debian's packages,

- PostgreSQL (``initdb`` in a temporary directory, then ``postgres`` on a loopback port;
  as root, both run as the unprivileged ``postgres`` user, or ``nobody``, since PostgreSQL
  refuses to run as root), with the schema made by ``log-monitor-server migrate``;
- Redis on a loopback port, saving nothing to disk;
- ``--nodes`` server nodes (``log-monitor-server serve --database … --redis …``);
- HAProxy in front of them on ``--port``, round robin with health checks on
  ``/api/health``. The client speaks WebSocket only, so no sticky sessions are needed.

It prints the URL to give ``log-monitor run --server`` and the commands for users, waits,
and on Ctrl-C (or SIGTERM) stops everything it started and removes the directory. The
classes are what the tests use to start the same parts (``tests/support/cluster_parts.py``).

Trust authentication on loopback: the database is a temporary one for one person's
machine, reachable from this machine only. Not a deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

PROG = "log-monitor-server cluster"
REPOSITORY = Path(__file__).resolve().parent.parent


class PartFailed(Exception):
    """A part did not start; the message is one sentence for a person."""


def free_port() -> int:
    """A loopback port free now (the OS's pick; a small race with other programs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise PartFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def unprivileged_user() -> str | None:
    """Who runs the engines when we are root (PostgreSQL refuses root); None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PartFailed("running as root, and there is no postgres or nobody user to run as.")


def private_directory(prefix: str, owner: str | None) -> Path:
    """A new directory in the system's temp dir (whose parents every user can pass
    through, unlike a root-only test directory), owned by ``owner`` when given."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def postgres_binary(name: str) -> str:
    """``initdb`` and ``postgres`` live in Debian's versioned directory, not on PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise PartFailed(f"{name} not found: install Debian's postgresql (scripts/system-deps.sh).")


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _need(binary: str, package: str) -> str:
    found = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if found is None:
        raise PartFailed(
            f"{binary} not found: install Debian's {package} (scripts/system-deps.sh)."
        )
    return found


class _Process:
    """A child process with its output in a log file, stopped by its PID."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def spawn(self, argv: Sequence[str], user: str | None = None, cwd: Path | None = None) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=user,
            group=None if user is None else pwd.getpwnam(user).pw_gid,
            cwd=cwd,
            # Its own process group: a Ctrl-C in the terminal reaches the launcher only,
            # which stops the parts in order.
            start_new_session=True,
        )

    def check_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            tail = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise PartFailed(f"{self.name} exited: {tail.strip()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


class LocalPostgres:
    """PostgreSQL in a temporary directory on a loopback port, trust auth for ``postgres``."""

    def __init__(self, port: int = 0, durable: bool = True) -> None:
        self.port = port or free_port()
        self.durable = durable
        self.user = unprivileged_user()
        self.directory: Path | None = None
        self._server: _Process | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        self.directory = private_directory("log-monitor-pg-", self.user)
        data = self.directory / "data"
        initdb = subprocess.run(
            [
                postgres_binary("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                *([] if self.durable else ["--no-sync"]),
            ],
            capture_output=True,
            user=self.user,
            group=None if self.user is None else pwd.getpwnam(self.user).pw_gid,
            cwd=self.directory,
            check=False,
            timeout=120,
        )
        if initdb.returncode != 0:
            raise PartFailed(f"initdb failed: {initdb.stderr.decode(errors='replace').strip()}")
        self._server = _Process("postgres", self.directory / "postgres.log")
        settings = [
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.directory}",
            "-c", "max_connections=200",
        ]  # fmt: skip
        if not self.durable:
            # Tests kill servers, never the database: its flushes only cost them time.
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        self._server.spawn(
            [postgres_binary("postgres"), "-D", str(data), "-p", str(self.port), *settings],
            user=self.user,
            cwd=self.directory,
        )

        def ready() -> bool:
            assert self._server is not None
            self._server.check_running()
            return port_open(self.port) and self._accepts_queries()

        wait_until(ready, timeout, "PostgreSQL to accept connections")
        return self

    def _accepts_queries(self) -> bool:
        return self.psql("SELECT 1", check=False).returncode == 0

    def psql(
        self, sql: str, database: str = "postgres", check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [
                shutil.which("psql") or postgres_binary("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise PartFailed(f"psql failed: {result.stderr.decode(errors='replace').strip()}")
        return result

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._server is not None:
            # SIGINT: PostgreSQL's fast shutdown (ends sessions, then stops).
            self._server.stop(signal.SIGINT, timeout=30)
            self._server = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


class LocalRedis:
    """redis-server on a loopback port, saving nothing."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.user = unprivileged_user()
        self.directory: Path | None = None
        self._server: _Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> LocalRedis:
        binary = _need("redis-server", "redis-server")
        self.directory = private_directory("log-monitor-redis-", self.user)
        self._server = _Process("redis-server", self.directory / "redis.log")
        self._server.spawn(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--maxclients", "10000",
            ],
            user=self.user,
            cwd=self.directory,
        )  # fmt: skip

        def ready() -> bool:
            assert self._server is not None
            self._server.check_running()
            return port_open(self.port)

        wait_until(ready, timeout, "Redis to listen")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def haproxy_config(port: int, node_ports: Sequence[int], max_connections: int = 20000) -> str:
    servers = "\n".join(
        f"    server node{i} 127.0.0.1:{node_port} check inter 500ms fall 2 rise 1"
        for i, node_port in enumerate(node_ports, start=1)
    )
    return f"""global
    maxconn {max_connections}

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A WebSocket, once upgraded, is a tunnel: Engine.IO's pings keep it busy.
    timeout tunnel 1h
    timeout http-request 10s
    # A node killed between two connections: try the next one.
    retries 3
    option redispatch

frontend clients
    bind 127.0.0.1:{port}
    maxconn {max_connections}
    default_backend nodes

backend nodes
    # Round robin: the client speaks WebSocket only, so a session never spans two
    # connections and needs no stickiness.
    balance roundrobin
    option httpchk GET /api/health
{servers}
"""


class LocalHaproxy:
    """HAProxy on a loopback port, in front of server nodes."""

    def __init__(self, node_ports: Sequence[int], port: int = 0) -> None:
        self.port = port or free_port()
        self.node_ports = list(node_ports)
        self.user = unprivileged_user()
        self.directory: Path | None = None
        self._proxy: _Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalHaproxy:
        binary = _need("haproxy", "haproxy")
        self.directory = private_directory("log-monitor-haproxy-", self.user)
        config = self.directory / "haproxy.cfg"
        # HAProxy needs two descriptors per connection (client and node side).
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        most = 20000 if hard == resource.RLIM_INFINITY else max(256, (hard - 100) // 2)
        config.write_text(haproxy_config(self.port, self.node_ports, min(20000, most)))
        config.chmod(0o644)
        self._proxy = _Process("haproxy", self.directory / "haproxy.log")
        self._proxy.spawn([binary, "-f", str(config), "-db"], user=self.user, cwd=self.directory)

        def ready() -> bool:
            assert self._proxy is not None
            self._proxy.check_running()
            return port_open(self.port)

        wait_until(ready, timeout, "HAProxy to listen")
        return self

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "server", *args]


def migrate_database(url: str) -> None:
    result = subprocess.run(
        server_command("migrate", "--database", url),
        cwd=REPOSITORY,
        capture_output=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise PartFailed(result.stderr.decode(errors="replace").strip())


class LocalNode:
    """One ``log-monitor-server serve`` of the cluster."""

    def __init__(self, index: int, directory: Path, database: str, redis: str, *extra: str) -> None:
        self.index = index
        self.port = free_port()
        self.database = database
        self.redis = redis
        self.extra = list(extra)
        self._process = _Process(f"node {index}", directory / f"node{index}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalNode:
        self._process.spawn(
            server_command(
                "serve",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--database", self.database,
                "--redis", self.redis,
                # Behind HAProxy every connection comes from 127.0.0.1.
                "--max-connections-per-peer", "0",
                *self.extra,
            ),
            cwd=REPOSITORY,
        )  # fmt: skip

        def ready() -> bool:
            self._process.check_running()
            return port_open(self.port)

        wait_until(ready, timeout, f"server node {self.index} to listen")
        return self

    def stop(self) -> None:
        self._process.stop()


@contextlib.contextmanager
def local_cluster(
    nodes: int = 3, port: int = 0, durable: bool = True, node_args: Sequence[str] = ()
) -> Iterator[tuple[LocalHaproxy, LocalPostgres, LocalRedis, list[LocalNode]]]:
    """Everything started, and stopped in reverse order whatever happens."""
    stack = contextlib.ExitStack()
    with stack:
        # Each part's stop is registered before its start: a part that fails half way
        # leaves nothing behind either.
        postgres = LocalPostgres(durable=durable)
        stack.callback(postgres.stop)
        postgres.start()
        redis = LocalRedis()
        stack.callback(redis.stop)
        redis.start()
        database = postgres.create_database("logmonitor")
        migrate_database(database)
        directory = Path(tempfile.mkdtemp(prefix="log-monitor-nodes-"))
        stack.callback(shutil.rmtree, directory, True)
        started: list[LocalNode] = []
        for index in range(1, nodes + 1):
            node = LocalNode(index, directory, database, redis.url, *node_args)
            stack.callback(node.stop)
            started.append(node.start())
        proxy = LocalHaproxy([node.port for node in started], port=port)
        stack.callback(proxy.stop)
        proxy.start()
        yield proxy, postgres, redis, started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PostgreSQL, Redis and server nodes behind HAProxy, on loopback, until Ctrl-C.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="server nodes (default 3)")
    parser.add_argument(
        "--port", type=int, default=0, help="HAProxy's port (default: one the OS picks)"
    )
    args = parser.parse_args(argv)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        with local_cluster(args.nodes, args.port) as (proxy, postgres, redis, nodes):
            database = postgres.url("logmonitor")
            print(
                f"""
A cluster of {len(nodes)} nodes behind HAProxy is running.

  Give the client:   log-monitor run --server {proxy.url}
  Database:          {database}
  Redis:             {redis.url}
  Nodes:             {", ".join(node.url for node in nodes)}

  Add a user:        log-monitor-server add-user NAME --database {database}
  End their sessions on every node:
                     log-monitor-server revoke NAME --database {database} --redis {redis.url}
  Read what came:    log-monitor-server dump --database {database}

Ctrl-C stops everything and removes its files.""",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                while not stopping:
                    time.sleep(0.5)
                    for node in nodes:
                        node._process.check_running()
            print("\nstopping the cluster", flush=True)
    except PartFailed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
