"""Group commit, end to end, on SQLite and on PostgreSQL: chunks of many connections share
commits, each connection's order is kept, and a commit that fails answers every chunk of
its group with an error the client sends again.

A failing commit is made real: a trigger in the server's own database refuses an insert
(a chunk whose text says ``poison``, or every insert while a switch is on), so the
transaction of the whole group fails, as it would on a full disk or a lost database.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from harness.main_process_runner import MainProcessRunner
from harness.protocol_client import ProtocolClient, authenticated_guest
from harness.server_process import ServerProcess
from tests.support.cluster_parts import backend, postgres_engine, server_database

__all__ = ["backend", "postgres_engine", "server_database"]  # fixtures of cluster_parts

SERVER_ERROR = {"error": "server_error", "message": "the server could not store the chunk"}

SQLITE_POISON = """
CREATE TABLE IF NOT EXISTS switch (on_ INTEGER);
CREATE TRIGGER poison BEFORE INSERT ON chunks
WHEN NEW.text LIKE '%poison%' OR EXISTS (SELECT 1 FROM switch)
BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
"""
POSTGRES_POISON = """
CREATE TABLE IF NOT EXISTS switch (on_ INTEGER);
CREATE FUNCTION poison() RETURNS trigger AS $$
BEGIN
    IF convert_from(NEW.text, 'UTF8') LIKE '%poison%' OR EXISTS (SELECT 1 FROM switch) THEN
        RAISE EXCEPTION 'refused by the test';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER poison BEFORE INSERT ON chunks FOR EACH ROW EXECUTE FUNCTION poison();
"""


async def execute(server: ServerProcess, sql: str) -> None:
    """Run ``sql`` in the server's database, beside the running server."""
    if server.database is None:
        with sqlite3.connect(server.data_dir / "server.sqlite3", timeout=10) as db:
            db.executescript(sql)
        return
    connection = await asyncpg.connect(server.database)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def stats(server: ServerProcess) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/stats") as response:
        result: dict[str, int] = await response.json()
        return result


def dump_by_client(server: ServerProcess) -> dict[str, list[dict[str, Any]]]:
    result = server.run_cli("dump", "--json")
    assert result.returncode == 0, result.stderr
    by_client: dict[str, list[dict[str, Any]]] = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        by_client.setdefault(record["clientId"], []).append(record)
    return by_client


@pytest.fixture
def server(tmp_path: Path, server_database: str | None) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server", database=server_database).start()
    yield process
    process.stop()
    assert "Traceback" not in process.log_text()


async def test_chunks_of_many_connections_share_commits_and_keep_each_connections_order(
    server: ServerProcess,
) -> None:
    """Before group commit: a commit per chunk (1,000 commits for 1,000 chunks)."""
    clients = await asyncio.gather(*(authenticated_guest(server.url) for _ in range(40)))

    async def stream(client: ProtocolClient) -> list[Any]:
        acks = [
            await client.send("submit_log_chunk", client.chunk(f"{client.client_id} {seq}\n", seq))
            for seq in range(1, 26)
        ]
        return list(await asyncio.wait_for(asyncio.gather(*acks), 60))

    answers = await asyncio.gather(*(stream(client) for client in clients))
    for client in clients:
        await client.close()
    assert all(ack.get("ok") is True and "duplicate" not in ack for acks in answers for ack in acks)
    counted = await stats(server)
    assert counted["committed_chunks"] == 1000
    assert counted["commits"] < 1000, counted
    assert counted["largest_batch"] > 1, counted
    stored = dump_by_client(server)
    for client in clients:
        records = stored[client.client_id]
        assert [r["seq"] for r in records] == list(range(1, 26))
        assert [r["chunk"] for r in records] == [f"{client.client_id} {s}\n" for s in range(1, 26)]
    print(f"1000 chunks from 40 connections: {counted['commits']} commits")


async def test_a_failed_commit_answers_every_chunk_of_its_group_with_an_error_sent_again(
    tmp_path: Path, server_database: str | None
) -> None:
    """A group held open 300 ms gathers one chunk from each of eight connections; one of
    them makes the commit fail, so all eight are answered ``server_error`` and none is
    stored. Resent (the seven others first), each is stored once; the eighth once the
    trigger is gone."""
    server = ServerProcess(
        tmp_path / "server", "--commit-wait", "300", database=server_database
    ).start()
    try:
        await execute(server, POSTGRES_POISON if server.database else SQLITE_POISON)
        clients = await asyncio.gather(*(authenticated_guest(server.url) for _ in range(8)))
        texts = [f"line of client {i}\n" for i in range(7)] + ["poison\n"]

        async def send(senders: list[ProtocolClient], chunks: list[str]) -> list[Any]:
            acks = [
                await client.send("submit_log_chunk", client.chunk(text, 1))
                for client, text in zip(senders, chunks, strict=True)
            ]
            return list(await asyncio.wait_for(asyncio.gather(*acks), 30))

        assert await send(clients, texts) == [SERVER_ERROR] * 8
        assert dump_by_client(server) == {}
        after_failure = await stats(server)
        assert after_failure["failed_commits"] == 1
        assert after_failure["commit_failures"] == 8

        # Sent again, as the client does: the seven innocent chunks are stored now.
        again = await send(clients[:7], texts[:7])
        for client, ack in zip(clients[:7], again, strict=True):
            assert ack == {"ok": True, "chunkId": f"{client.client_id}:1"}
        assert await send(clients[7:], texts[7:]) == [SERVER_ERROR]
        await execute(
            server,
            "DROP TRIGGER poison ON chunks" if server.database else "DROP TRIGGER poison",
        )
        last = clients[7]
        assert await last.submit(last.chunk("poison\n", 1)) == {
            "ok": True,
            "chunkId": f"{last.client_id}:1",
        }
        for client in clients:
            await client.close()
        stored = dump_by_client(server)
        for client, text in zip(clients, texts, strict=True):
            assert [r["chunk"] for r in stored[client.client_id]] == [text]
    finally:
        server.stop()


def test_the_real_client_sends_again_what_a_failed_commit_refused(tmp_path: Path) -> None:
    """The client resends a ``server_error`` chunk after a backoff (it dead-letters only
    ``too_large`` and ``invalid``): with every commit failing for a while, nothing is lost
    or stored twice."""
    server = ServerProcess(tmp_path / "server").start()
    log_file = tmp_path / "app.log"
    log_file.write_text("".join(f"before {i}\n" for i in range(50)))
    runner = MainProcessRunner(tmp_path / "client", str(log_file), "--server", server.url)
    try:
        asyncio.run(execute(server, SQLITE_POISON + "INSERT INTO switch VALUES (1);"))
        runner.start()
        runner.wait_for_status(
            lambda s: "server_error" in (s.get("lastError") or ""),
            60,
            "a chunk refused by a failed commit",
        )
        with log_file.open("a") as log:
            log.write("".join(f"during {i}\n" for i in range(50)))
        asyncio.run(execute(server, "DELETE FROM switch;"))
        expected = log_file.read_bytes()
        runner.wait_for_status(
            lambda s: s["bufferedChunks"] == 0 and s["sentBytes"] >= len(expected),
            60,
            "everything acknowledged once commits work again",
        )
        assert runner.status() is not None
    finally:
        runner.ensure_stopped()
        server.stop()
    client_id = (tmp_path / "client" / "client-id").read_text().strip()
    assert server.dump(client_id) == expected
