"""Several server nodes as one: PostgreSQL shared, Redis between them, HAProxy in front.

Real engines (``tests/support/cluster_parts.py``: Debian's PostgreSQL, Redis and HAProxy on
loopback ports in temporary directories), real server processes, real clients:

- 20 clients stream through HAProxy to 3 nodes while nodes are killed with SIGKILL and
  restarted: every client's lines are stored exactly once, in order. Two of the 20 are the
  real client (``python -m main_process run --headless``, following a file a writer
  appends to); 18 are light protocol clients in this process that resend from their
  first unacknowledged chunk after any failure, as the real client does (20 main
  processes, each with its Python, ZeroMQ and SQLite, would take the 2 cores from the
  servers being tested).
- A ``revoke`` ends the user's session held on another node at once, without the client
  sending anything; so does a refresh token presented twice on one node.
- Two nodes racing to rotate the same refresh token: exactly one wins.

Nothing waits by sleeping: every wait is for an event, with a deadline. The kills are
paced by the clock (that is the fault schedule, not a wait for anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.main_process_runner import MainProcessRunner
from harness.protocol_client import ProtocolClient
from harness.server_process import ServerProcess, server_cli
from server.local_cluster import LocalHaproxy, LocalRedis
from tests.support.cluster_parts import database_url, postgres_engine, redis_engine
from tests.support.line_writer import LineWriter

__all__ = ["database_url", "postgres_engine", "redis_engine"]  # fixtures of cluster_parts

PASSWORD = "correct horse battery staple"
LIGHT_CLIENTS = 18
REAL_CLIENTS = 2
CHUNKS_PER_LIGHT_CLIENT = 150
KILL_ROUNDS = 6

pytestmark = pytest.mark.timeout(300)


def start_nodes(
    tmp_path: Path, count: int, database: str, redis: str | None, *extra: str
) -> list[ServerProcess]:
    nodes = []
    for index in range(count):
        node = ServerProcess(
            tmp_path / f"node{index}",
            "--max-connections-per-peer",
            "0",
            *extra,
            database=database,
            redis=redis,
        )
        nodes.append(node)
        node.start()
    return nodes


@pytest.fixture
def nodes(
    tmp_path: Path, database_url: str, redis_engine: LocalRedis
) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        started.extend(start_nodes(tmp_path, 3, database_url, redis_engine.url))
        yield started
    finally:
        for node in started:
            node.stop()
        for node in started:
            assert "Traceback" not in node.log_text(), node.log_text()[-3000:]


@pytest.fixture
def proxy(nodes: list[ServerProcess]) -> Iterator[LocalHaproxy]:
    haproxy = LocalHaproxy([node.port for node in nodes])
    try:
        haproxy.start()
        yield haproxy
    finally:
        haproxy.stop()


# ----------------------------------------------------------------------------- streaming


class Retry(Exception):
    """The connection failed or the server refused the chunk for now: resend."""


@dataclass
class LightClient:
    """Sends numbered chunks with up to four in flight; after any failure, reconnects
    (through the proxy, to whichever node) and resends from the first unacknowledged."""

    url: str
    index: int
    total: int
    token: str | None = None
    client_id: str = ""
    acked: int = 0
    reconnects: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def text(self, seq: int) -> str:
        return "".join(f"client {self.index:02d} chunk {seq:04d} line {n}\n" for n in range(3))

    async def run(self) -> None:
        while self.acked < self.total:
            try:
                await self._session()
            except (Retry, OSError, TimeoutError, ConnectionError) as exc:
                self.errors[type(exc).__name__] += 1
            except Exception as exc:  # python-socketio's own ConnectionError and kin
                self.errors[type(exc).__name__] += 1
            if self.acked < self.total:
                self.reconnects += 1
                # Backoff pacing while a node is down and HAProxy notices.
                await asyncio.sleep(0.1)

    async def _session(self) -> None:
        client = ProtocolClient(self.url, self.client_id or None, self.token)
        self.client_id = client.client_id
        lost = asyncio.Event()
        client.sio.on("disconnect", lambda *args: lost.set(), namespace="/client")
        try:
            await client.connect()
            event, data = await client.next_event(5)
            if event == "guestToken":
                self.token = data["token"]
                return
            if event != "authenticated":
                raise Retry(f"{event} {data}")
            while self.acked < self.total:
                seqs = range(self.acked + 1, min(self.total, self.acked + 4) + 1)
                pending = [
                    await client.send("submit_log_chunk", client.chunk(self.text(seq), seq))
                    for seq in seqs
                ]
                for seq, future in zip(seqs, pending, strict=True):
                    ack = await self._ack(future, lost)
                    if ack.get("ok") is not True:
                        raise Retry(str(ack))
                    if ack.get("duplicate"):
                        self.duplicates += 1
                    self.acked = seq
                # Pacing: a client of a log, not a flood.
                await asyncio.sleep(0.03)
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    @staticmethod
    async def _ack(future: asyncio.Future[Any], lost: asyncio.Event) -> dict[str, Any]:
        lost_wait = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait(
                {future, lost_wait}, timeout=5, return_when="FIRST_COMPLETED"
            )
        finally:
            lost_wait.cancel()
        if future in done:
            ack: dict[str, Any] = future.result()
            return ack
        raise Retry("connection lost" if lost.is_set() else "no ack within 5 s")


def all_acknowledged(size: int) -> Callable[[dict[str, Any]], bool]:
    return lambda status: status["bufferedChunks"] == 0 and status["sentBytes"] >= size


def dump_records(database: str, data_dir: Path) -> list[dict[str, Any]]:
    result = server_cli(data_dir, "dump", "--json", database=database)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_twenty_clients_through_haproxy_while_nodes_are_killed_store_every_line_once_in_order(
    tmp_path: Path, nodes: list[ServerProcess], proxy: LocalHaproxy, database_url: str
) -> None:
    light = [LightClient(proxy.url, i, CHUNKS_PER_LIGHT_CLIENT) for i in range(LIGHT_CLIENTS)]
    writers: list[LineWriter] = []
    runners: list[MainProcessRunner] = []
    for i in range(REAL_CLIENTS):
        log_file = tmp_path / f"real{i}" / "app.log"
        log_file.parent.mkdir()
        log_file.touch()
        writers.append(LineWriter(log_file, seed=i).start())
        runner = MainProcessRunner(tmp_path / f"real{i}-data", str(log_file), "--server", proxy.url)
        runners.append(runner)
    chooser = random.Random(17)
    kills = 0
    try:
        for runner in runners:
            await asyncio.to_thread(runner.start)
        streaming = asyncio.gather(*(client.run() for client in light))
        for round_number in range(KILL_ROUNDS):
            await asyncio.sleep(chooser.uniform(0.8, 1.6))
            node = nodes[round_number % len(nodes)]
            await asyncio.to_thread(node.stop, True)
            kills += 1
            await asyncio.sleep(chooser.uniform(0.2, 0.8))
            await asyncio.to_thread(node.start)
        for writer in writers:
            writer.stop()
        await asyncio.wait_for(streaming, 120)
        for runner, writer in zip(runners, writers, strict=True):
            await asyncio.to_thread(
                runner.wait_for_status,
                all_acknowledged(writer.path.stat().st_size),
                120,
                "the real client to have everything acknowledged",
            )
    finally:
        for writer in writers:
            writer.stop()
        for runner in runners:
            runner.ensure_stopped()

    assert kills == KILL_ROUNDS
    # The kills hit live streams: clients lost connections and resent.
    assert sum(client.reconnects for client in light) >= KILL_ROUNDS, [c.errors for c in light]
    records = dump_records(database_url, tmp_path / "dump")
    by_client: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_client.setdefault(record["clientId"], []).append(record)
    for client in light:
        stored = by_client.get(client.client_id, [])
        seqs = [record["seq"] for record in stored]
        assert seqs == list(range(1, client.total + 1)), (client.index, seqs[:20], len(seqs))
        assert "".join(r["chunk"] for r in stored) == "".join(
            client.text(seq) for seq in range(1, client.total + 1)
        )
    for runner, writer in zip(runners, writers, strict=True):
        client_id = (runner.data_dir / "client-id").read_text().strip()
        stored_text = "".join(record["chunk"] for record in by_client[client_id])
        expected = writer.path.read_text()
        assert writer.lines_written > 100
        if stored_text != expected:
            lines = stored_text.splitlines()
            pytest.fail(
                f"real client: stored {len(lines)} lines ({len(lines) - len(set(lines))}"
                f" duplicated), expected {writer.lines_written}"
            )
    # Every node took part (HAProxy spread the clients over them).
    for node in nodes:
        assert "authenticated as guest" in node.log_text(), node.url
    print(
        f"{kills} kills; light clients reconnected {sum(c.reconnects for c in light)} times,"
        f" {sum(c.duplicates for c in light)} duplicate acks;"
        f" {sum(len(v) for v in by_client.values())} chunks stored once each"
    )


# ----------------------------------------------------------------------------- sessions


async def login(http: aiohttp.ClientSession, url: str, client_id: str = "") -> Any:
    async with http.post(
        f"{url}/api/auth/login",
        json={"identifier": "alice", "password": PASSWORD, "clientId": client_id},
    ) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def add_alice(node: ServerProcess) -> None:
    added = node.run_cli("add-user", "alice", "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr


async def test_a_revoke_ends_the_users_session_held_on_another_node_at_once(
    tmp_path: Path, nodes: list[ServerProcess], database_url: str, redis_engine: LocalRedis
) -> None:
    """Before ``--redis``: the connection on node B heard nothing until its next chunk."""
    node_a, node_b, _ = nodes
    add_alice(node_a)
    async with aiohttp.ClientSession() as http:
        tokens = await login(http, node_a.url)
    client = await ProtocolClient(node_b.url, token=tokens["access_token"]).connect()
    try:
        assert (await client.expect("authenticated"))["username"] == "alice"
        assert (await client.submit(client.chunk("before\n", 1)))["ok"] is True

        revoked = await asyncio.to_thread(
            server_cli,
            tmp_path / "cli",
            "revoke",
            "alice",
            "--redis",
            redis_engine.url,
            database=database_url,
        )
        assert revoked.returncode == 0, revoked.stderr
        assert (
            revoked.stdout.decode().strip()
            == "revoked 1 session(s) of alice; told 3 server node(s)"
        )
        # Nothing sent: the node holding the connection says it at once.
        assert await client.expect("retry_auth", timeout=5) == {"reason": "token_revoked"}
        assert await client.submit(client.chunk("after\n", 2)) == {"error": "unauthenticated"}
    finally:
        await client.close()


async def test_a_reused_refresh_token_on_one_node_ends_the_session_on_another(
    nodes: list[ServerProcess],
) -> None:
    node_a, node_b, node_c = nodes
    add_alice(node_a)
    async with aiohttp.ClientSession() as http:
        first = await login(http, node_a.url)
        client = await ProtocolClient(node_c.url, token=first["access_token"]).connect()
        try:
            assert (await client.expect("authenticated"))["username"] == "alice"
            for node, expected in ((node_a, 200), (node_b, 401)):
                async with http.post(
                    f"{node.url}/api/auth/refresh", json={"refreshToken": first["refresh_token"]}
                ) as response:
                    assert response.status == expected, await response.text()
            assert await client.expect("retry_auth", timeout=5) == {"reason": "token_revoked"}
        finally:
            await client.close()


async def test_two_nodes_racing_to_rotate_the_same_refresh_token_exactly_one_wins(
    nodes: list[ServerProcess],
) -> None:
    """Before the conditional update (a read, then a write), both nodes read the token
    unspent and both issued the next pair."""
    node_a, node_b, _ = nodes
    add_alice(node_a)

    async def refresh(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
        async with http.post(f"{url}/api/auth/refresh", json={"refreshToken": token}) as response:
            return response.status, await response.json()

    async with aiohttp.ClientSession() as http:
        sessions = [await login(http, node_a.url) for _ in range(12)]
        for tokens in sessions:
            answers = await asyncio.gather(
                refresh(http, node_a.url, tokens["refresh_token"]),
                refresh(http, node_b.url, tokens["refresh_token"]),
            )
            statuses = sorted(status for status, _ in answers)
            assert statuses == [200, 401], answers
            assert [body for status, body in answers if status == 401] == [
                {"error": "refresh_token_reused"}
            ]
