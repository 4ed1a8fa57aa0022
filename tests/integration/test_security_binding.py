"""Installation binding, end to end: no peer can store under, or drop the chunks of, an
installation whose credentials it does not hold (PROTOCOL.md, "Installation binding").

The server is the real reference server on loopback; installations are the real client
(``log-monitor run`` as a child process, its status and commands over real ipc) or, for
what only a hostile peer does, the bare protocol client of ``harness/protocol_client.py``.
Each test says what a server without binding let through.

Nothing waits by sleeping: every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.main_process_runner import MainProcessRunner, log_monitor
from harness.protocol_client import ProtocolClient, authenticated_guest
from harness.server_process import ServerProcess, server_cli
from ipc.host import connect_sync_client
from ipc.messages import Command, Connect, Disconnect, Ok

PASSWORD = "s3cret-pass-phrase"
ATTACKER_TEXT = "written by someone else\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "server"
    for name in ("alice", "mallory"):
        added = server_cli(data, "add-user", name, "--password-stdin", input_text=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
    process = ServerProcess(data).start()
    yield process
    process.stop()


# ----------------------------------------------------------------------------- helpers


def command(data_dir: Path, message: Command) -> None:
    with connect_sync_client(data_dir) as client:
        reply = client.request(message, timeout=10.0)
    assert isinstance(reply, Ok), reply


def start_installation(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner], name: str = "b"
) -> tuple[MainProcessRunner, Path]:
    """A real client following ``<name>/app.log``, connected as a guest."""
    log = tmp_path / name / "app.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    runner = MainProcessRunner(tmp_path / f"{name}-data", str(log), "--server", server.url)
    runners.append(runner)
    runner.start()
    runner.wait_for_status(connected("guest"), 30, "connected as a guest")
    return runner, log


def connected(identity: str) -> Any:
    return lambda s: s["state"] == "connected" and s["identity"] == identity


def append(log: Path, text: str) -> None:
    with log.open("a") as file:
        file.write(text)


def dump_records(server: ServerProcess, client_id: str) -> list[dict[str, Any]]:
    result = server.run_cli("dump", "--client-id", client_id, "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def login(server: ServerProcess, name: str, client_id: str, **proof: str) -> tuple[int, Any]:
    return await post(
        f"{server.url}/api/auth/login",
        {"identifier": name, "password": PASSWORD, "hostname": "h", "clientId": client_id} | proof,
    )


async def pose_as(url: str, victim: str, token: str | None = None) -> list[tuple[str, Any]]:
    """Connect as installation ``victim`` (with ``token``, or none), follow a guest token if
    the server hands one out, and submit the victim's first chunk id with other text.
    Returns what the server said, in order."""
    said: list[tuple[str, Any]] = []
    client = await ProtocolClient(url, victim, token).connect()
    said.append(await client.next_event())
    if said[-1][0] == "guestToken":  # what a server without binding did
        await client.close()
        client = await ProtocolClient(url, victim, said[-1][1]["token"]).connect()
        said.append(await client.next_event())
    said.append(("ack", await client.submit(client.chunk(ATTACKER_TEXT, 1))))
    await client.close()
    return said


# ----------------------------------------------------------------------------- the spoofing hole


async def test_a_peer_posing_as_an_installation_can_neither_store_as_it_nor_drop_its_chunk(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    """Before binding: a tokenless handshake as B got a guest token for B, the attacker's
    ``B:1`` was stored, B's real ``B:1`` was answered ``duplicate`` and deleted from B's
    spool, and ``dump --client-id B`` showed the attacker's text."""
    b, log = await asyncio.to_thread(start_installation, tmp_path, server, runners)
    b_id = (await asyncio.to_thread(b.status) or {})["clientId"]
    # B goes offline with its first chunk in the spool: the moment an attacker would pick.
    await asyncio.to_thread(command, b.data_dir, Disconnect())
    append(log, "B's own line\n")
    await asyncio.to_thread(
        b.wait_for_status, lambda s: s["bufferedChunks"] == 1, 30, "B's chunk in its spool"
    )

    tokenless = await pose_as(server.url, b_id)
    attacker = await authenticated_guest(server.url)
    attacker_token = attacker.token
    assert attacker_token is not None
    with_own_guest_token = await pose_as(server.url, b_id, attacker_token)
    # On its own connection the attacker may name B's chunk, or B itself, in the payload.
    foreign_chunk_id = await attacker.submit(
        {"clientId": attacker.client_id, "chunk": ATTACKER_TEXT, "chunkId": f"{b_id}:1"}
    )
    foreign_client_id = await attacker.submit(
        {"clientId": b_id, "chunk": ATTACKER_TEXT, "chunkId": f"{b_id}:1", "seq": 1}
    )
    await attacker.close()
    registered = await post(
        f"{server.url}/api/auth/register-guest", {"clientId": b_id, "hostname": "h"}
    )
    # B's chunk is still waiting for its acknowledgement.
    status = await asyncio.to_thread(b.status)
    assert status is not None
    assert status["bufferedChunks"] == 1

    await asyncio.to_thread(command, b.data_dir, Connect())
    await asyncio.to_thread(
        b.wait_for_status,
        lambda s: s["bufferedChunks"] == 0 and s["sentChunks"] == 1,
        30,
        "B's chunk acknowledged",
    )
    assert server.dump(b_id) == b"B's own line\n"
    (record,) = dump_records(server, b_id)
    assert (record["chunkId"], record["identity"]) == (f"{b_id}:1", "guest")

    assert tokenless == [
        ("retry_auth", {"reason": "client_id_taken"}),
        ("ack", {"error": "unauthenticated"}),
    ]
    assert with_own_guest_token == [
        ("retry_auth", {"reason": "client_mismatch"}),
        ("ack", {"error": "unauthenticated"}),
    ]
    assert foreign_chunk_id["error"] == "invalid"
    assert "chunkId" in foreign_chunk_id["message"]
    assert foreign_client_id["error"] == "invalid"
    assert registered == (409, {"error": "client_id_taken"})
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/stats") as response:
        stats = await response.json()
    assert stats["duplicates"] == 0
    assert stats["binding_refusals"] == 2


async def test_every_handshake_with_credentials_that_do_not_own_the_client_id_is_refused(
    server: ServerProcess,
) -> None:
    """Before binding, each of these was ``authenticated`` or given a guest token."""
    b = await authenticated_guest(server.url)
    a = await authenticated_guest(server.url)
    assert a.token is not None
    assert b.token is not None
    status, mallory = await login(server, "mallory", str(uuid.uuid4()))
    assert status == 200
    attempts = {
        "no token": None,
        "another installation's guest token": a.token,
        "a user who never connected with it": mallory["access_token"],
    }
    answers = {}
    for what, token in attempts.items():
        client = await ProtocolClient(server.url, b.client_id, token).connect()
        answers[what] = await client.next_event()
        await client.close()
    # And B's own guest token with another installation's id.
    swapped = await ProtocolClient(server.url, a.client_id, b.token).connect()
    answers["its guest token with another id"] = await swapped.next_event()
    await swapped.close()
    assert answers == {
        "no token": ("retry_auth", {"reason": "client_id_taken"}),
        "another installation's guest token": ("retry_auth", {"reason": "client_mismatch"}),
        "a user who never connected with it": ("retry_auth", {"reason": "client_mismatch"}),
        "its guest token with another id": ("retry_auth", {"reason": "client_mismatch"}),
    }
    # The owners are unaffected.
    assert (await b.submit(b.chunk("b\n", 1)))["ok"] is True
    assert (await a.submit(a.chunk("a\n", 1)))["ok"] is True
    await a.close()
    await b.close()


async def test_an_attackers_login_naming_another_installations_id_does_not_bind_it(
    server: ServerProcess,
) -> None:
    """Before binding, a login took any clientId, and its access token then connected as
    that installation."""
    b = await authenticated_guest(server.url)
    own = await authenticated_guest(server.url)  # the attacker's own installation
    assert own.token is not None
    await own.close()
    assert await login(server, "mallory", b.client_id) == (409, {"error": "client_mismatch"})
    assert await login(server, "mallory", b.client_id, guestToken=own.token) == (
        409,
        {"error": "client_mismatch"},
    )
    assert await login(server, "mallory", b.client_id, guestToken="not-a-token") == (
        409,
        {"error": "client_mismatch"},
    )
    status, tokens = await login(server, "mallory", own.client_id, guestToken=own.token)
    assert status == 200
    assert await login(server, "mallory", b.client_id, refreshToken=tokens["refresh_token"]) == (
        409,
        {"error": "client_mismatch"},
    )
    posing = await ProtocolClient(server.url, b.client_id, tokens["access_token"]).connect()
    assert await posing.next_event() == ("retry_auth", {"reason": "client_mismatch"})
    assert await posing.submit(posing.chunk(ATTACKER_TEXT, 1)) == {"error": "unauthenticated"}
    await posing.close()
    # B's own sign-in, showing its guest token, is let through and shares the id.
    assert b.token is not None
    status, alice = await login(server, "alice", b.client_id, guestToken=b.token)
    assert status == 200
    as_alice = await ProtocolClient(server.url, b.client_id, alice["access_token"]).connect()
    assert (await as_alice.next_event())[0] == "authenticated"
    assert (await as_alice.submit(as_alice.chunk("B as alice\n", 1)))["ok"] is True
    await as_alice.close()
    await b.close()
    assert server.dump(b.client_id) == b"B as alice\n"


async def test_ids_and_tokens_from_before_binding_keep_working_and_are_bound_on_first_use(
    server: ServerProcess,
) -> None:
    """A database from before binding existed has no owners: the holders of its tokens keep
    working, and their first handshake binds the id."""
    guest = await authenticated_guest(server.url)
    await guest.close()
    status, alice = await login(server, "alice", "")  # a login naming no clientId
    assert status == 200
    server.stop()
    with sqlite3.connect(server.data_dir / "server.sqlite3") as db:
        db.execute("DROP TABLE IF EXISTS client_owners")
    server.start()

    again = await ProtocolClient(server.url, guest.client_id, guest.token).connect()
    assert (await again.next_event())[0] == "authenticated"
    assert (await again.submit(again.chunk("still mine\n", 1)))["ok"] is True
    await again.close()
    user_id = str(uuid.uuid4())
    as_alice = await ProtocolClient(server.url, user_id, alice["access_token"]).connect()
    assert (await as_alice.next_event())[0] == "authenticated"
    await as_alice.close()
    # Bound now: a tokenless claim of either id is refused.
    for client_id in (guest.client_id, user_id):
        bare = await ProtocolClient(server.url, client_id).connect()
        assert await bare.next_event() == ("retry_auth", {"reason": "client_id_taken"})
        await bare.close()


# ----------------------------------------------------------------------------- the real client


def test_a_client_that_lost_its_token_file_takes_a_new_id_and_delivers_everything(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    """Before binding, the server gave the tokenless client a guest token for its old id.
    Now the old id is refused (``client_id_taken``), the client takes a new one, keeps the
    old one aside, and what waited in its spool goes out under the new one."""
    b, log = start_installation(tmp_path, server, runners)
    old_id = (b.status() or {})["clientId"]
    append(log, "line 1\nline 2\n")
    b.wait_for_status(lambda s: s["sentChunks"] >= 1 and s["bufferedChunks"] == 0, 30, "sent")
    command(b.data_dir, Disconnect())
    append(log, "line 3\nline 4\n")
    b.wait_for_status(lambda s: s["bufferedChunks"] >= 1, 30, "lines 3 and 4 in the spool")
    assert b.stop() == 0
    (b.data_dir / "tokens.json").unlink()

    b.start()
    status = b.wait_for_status(
        lambda s: s["state"] == "connected" and s["bufferedChunks"] == 0, 30, "all delivered"
    )
    new_id = status["clientId"]
    assert new_id != old_id
    assert status["identity"] == "guest"
    assert "new installation" in status["lastError"]
    assert (b.data_dir / "client-id").read_text().strip() == new_id
    (kept,) = b.data_dir.glob("client-id.taken-*")
    assert kept.read_text().strip() == old_id
    assert server.dump(old_id) == b"line 1\nline 2\n"
    assert server.dump(new_id) == b"line 3\nline 4\n"
    # It stays the new installation: the next start is not a new id again.
    assert b.stop() == 0
    b.start()
    assert b.wait_for_status(connected("guest"), 30, "connected again")["clientId"] == new_id


def test_signing_in_and_out_through_the_running_client_keeps_its_id_and_its_binding(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    b, log = start_installation(tmp_path, server, runners)
    b_id = (b.status() or {})["clientId"]
    login = log_monitor(
        "login",
        "--identifier",
        "alice",
        "--password-stdin",
        "--data-dir",
        str(b.data_dir),
        input_text=PASSWORD + "\n",
    )
    assert login.returncode == 0, login.stderr
    assert b.wait_for_status(connected("user"), 30, "signed in")["clientId"] == b_id
    append(log, "as alice\n")
    b.wait_for_status(lambda s: s["sentChunks"] == 1, 30, "the first chunk sent")
    # Signed in, the id is still B's alone (before binding a bare handshake got a token).
    assert asyncio.run(pose_as(server.url, b_id))[0] == (
        "retry_auth",
        {"reason": "client_id_taken"},
    )

    logout = log_monitor("logout", "--data-dir", str(b.data_dir))
    assert logout.returncode == 0, logout.stderr
    status = b.wait_for_status(connected("guest"), 30, "signed out")
    assert status["clientId"] == b_id
    append(log, "as guest again\n")
    b.wait_for_status(lambda s: s["sentChunks"] == 2, 30, "the second chunk sent")
    assert asyncio.run(pose_as(server.url, b_id))[0] == (
        "retry_auth",
        {"reason": "client_id_taken"},
    )
    assert [(r["chunk"], r["identity"]) for r in dump_records(server, b_id)] == [
        ("as alice\n", "user"),
        ("as guest again\n", "guest"),
    ]
    assert not list(b.data_dir.glob("client-id.taken-*"))


def test_signing_in_and_out_with_no_client_running_keeps_its_id(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    """Signed in before the installation ever connected, the id is the user's alone; the
    logout hands it back to a new guest, whose token the installation goes on with."""
    data = tmp_path / "b-data"
    offline = ("--server", server.url, "--data-dir", str(data))
    login = log_monitor(
        "login", "--identifier", "alice", "--password-stdin", *offline, input_text=PASSWORD + "\n"
    )
    assert login.returncode == 0, login.stderr
    b_id = (data / "client-id").read_text().strip()
    b = MainProcessRunner(data, "--server", server.url)
    runners.append(b)
    b.start()
    assert b.wait_for_status(connected("user"), 30, "signed in")["clientId"] == b_id
    assert b.stop() == 0

    logout = log_monitor("logout", *offline)
    assert logout.returncode == 0, logout.stderr
    tokens = json.loads((data / "tokens.json").read_text())
    assert tokens["refresh_token"] is None
    assert tokens["guest_token"], "the server should have handed back a guest token"
    b.start()
    status = b.wait_for_status(connected("guest"), 30, "connected as a guest")
    assert status["clientId"] == b_id
    assert json.loads((data / "tokens.json").read_text())["guest_token"] == tokens["guest_token"]
    assert not list(data.glob("client-id.taken-*"))
