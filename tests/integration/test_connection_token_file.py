"""``ServerConnection`` with a token file the kernel refuses to write, against the real server.

The data dir holding ``tokens.json`` is a small tmpfs mounted for the test (as root, the
way the tests run: root writes through any file mode, but not through a read-only mount
or a full tmpfs, which keeps no blocks for root). The tmpfs is remounted read-only, or
filled to its last page, and later given back. Without root a read-only dir is made by
taking its write permission away (``chmod 500``), which the kernel enforces for anyone
but root; a full disk needs the mount.

What is checked (the rule of ``connection/state.py``: what is presented is on disk):

- a refresh waits for the file, so the refresh token on disk is never spent while the
  next one could not be stored; the status says ``cannot save tokens: <reason>``; once
  the file takes writes the client refreshes, reconnects as the user and ships;
- a client stopped while the file is read-only (as good as a crash, for the disk) leaves a
  session the next start refreshes and uses: the user is not signed out;
- when the disk fails between the save before a refresh and the save after it, the
  rotated tokens are kept in memory and presented only once they are saved;
- a guest token that cannot be saved (the disk was full before the client started, so
  the token file has no reserve) is not presented until it is;
- on a disk that fills while the client runs, the token file's reserve takes the save,
  and the client ships (which is what drains a spool that filled the disk);
- no token appears in a log line or a status.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from harness.server_process import ServerProcess
from harness.waiting import wait_until_async
from main_process.connection.server_connection import ServerConnection
from main_process.connection.state import SIGNED_OUT_MESSAGE, ConnectionStatus
from main_process.credentials import Tokens
from main_process.credentials import TokenStore as FileTokenStore
from tests.support.connection_fakes import MemorySpool
from tests.support.connection_helpers import (
    FAST,
    connected,
    group,
    login,
    numbered_lines,
    server_stats,
)

# ----------------------------------------------------------------------------- the data dir


class RefusingDir:
    """A directory whose writes the kernel can be made to refuse, and to accept again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False
        self._refusing: Literal["read-only", "full", "permission"] | None = None
        self._ballast = path / "ballast"

    def __enter__(self) -> RefusingDir:
        self.path.mkdir(mode=0o700, parents=True)
        if os.geteuid() == 0:
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(self.path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if mounted.returncode != 0:
                raise RuntimeError(f"cannot mount a tmpfs on {self.path}: {mounted.stderr.strip()}")
            self.mounted = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.accept_writes()
        if self.mounted:
            subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30, check=True)

    def refuse_writes(self, how: Literal["read-only", "full"]) -> str:
        """Make writes fail; return the error the kernel now gives (e.g. its strerror)."""
        if not self.mounted:
            if how == "full":
                raise RuntimeError("filling a disk needs root, to mount a tmpfs")
            self.path.chmod(0o500)
            self._refusing = "permission"
        elif how == "read-only":
            self._mount_options("remount,ro")
            self._refusing = "read-only"
        else:
            ballast = os.open(self._ballast, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                while True:  # to the last byte: tmpfs keeps no reserve, not even for root
                    os.write(ballast, b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
            finally:
                os.close(ballast)
            self._refusing = "full"
        return self._write_error()

    def accept_writes(self) -> None:
        if self._refusing == "permission":
            self.path.chmod(0o700)
        elif self._refusing == "read-only":
            self._mount_options("remount,rw")
        elif self._refusing == "full":
            self._ballast.unlink()
        self._refusing = None

    def _mount_options(self, options: str) -> None:
        subprocess.run(
            ["mount", "-o", options, str(self.path)], capture_output=True, timeout=30, check=True
        )

    def _write_error(self) -> str:
        probe = self.path / "probe"
        try:
            with probe.open("wb") as file:
                file.write(b"x" * 8192)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            if self._refusing != "read-only":
                probe.unlink(missing_ok=True)
        raise AssertionError(f"{self.path} still takes writes")


@pytest.fixture
def client_dir(tmp_path: Path) -> Iterator[RefusingDir]:
    with RefusingDir(tmp_path / "client") as directory:
        yield directory


@pytest.fixture
def short_lived_server(tmp_path: Path) -> Iterator[ServerProcess]:
    # Access tokens expire 2 s after they are issued, so a refresh comes soon.
    running = ServerProcess(tmp_path / "server", "--access-ttl", "2").start()
    try:
        yield running
    finally:
        running.stop()


# ----------------------------------------------------------------------------- helpers


async def until_the_server_has_sent_retry_auth(server: ServerProcess, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await server_stats(server))["retry_auth_sent"] < 1:
        if loop.time() > deadline:
            raise AssertionError(f"no retry_auth within {timeout} s")
        await asyncio.sleep(0.05)


def failed_saves(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith("cannot save tokens: "))


def assert_no_secret_shown(
    secrets: set[str | None], caplog: pytest.LogCaptureFixture, statuses: list[ConnectionStatus]
) -> None:
    shown = [record.getMessage() for record in caplog.records]
    shown += [status.last_error or "" for status in statuses]
    for secret in secrets - {None}:
        assert secret is not None
        assert not any(secret in text for text in shown)


def tokens_of(*values: Tokens) -> set[str | None]:
    return {t for v in values for t in (v.access_token, v.refresh_token, v.guest_token)}


# ----------------------------------------------------------------------------- tests


async def test_a_refresh_waits_for_a_read_only_token_file_then_the_session_goes_on(
    short_lived_server: ServerProcess,
    client_dir: RefusingDir,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = short_lived_server
    client_id = str(uuid.uuid4())
    store = FileTokenStore(client_dir.path / "tokens.json")
    signed_in = await login(server, "ada", client_id)
    store.save(signed_in)
    spool = MemorySpool()
    statuses: list[ConnectionStatus] = []
    texts = group(numbered_lines(600), 10)
    async with ServerConnection(
        server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=store,
        on_status=statuses.append,
        config=FAST,
    ) as connection:
        for text in texts[:30]:
            await connection.ensure_connected_and_send_log_chunk(text)
        await connection.wait_for_status(connected("user"), 20)
        await wait_until_async(lambda: not spool.chunks, 20, "the first half acknowledged")

        reason = client_dir.refuse_writes("read-only")
        expected = f"cannot save tokens: {reason} ({store.path})"
        # The access token expires within 2 s; its refresh must wait for the file.
        held = await connection.wait_for_status(lambda s: s.last_error == expected, 20)
        assert held.state == "disconnected"
        for text in texts[30:]:
            await connection.ensure_connected_and_send_log_chunk(text)
        await wait_until_async(lambda: failed_saves(caplog) >= 3, 20, "three failed saves")
        assert connection.status().state == "disconnected"
        assert connection.status().last_error == expected
        # Nothing was refreshed: the refresh token on disk is the one the server holds.
        assert connection.tokens == signed_in
        assert store.load() == signed_in
        assert len(spool.chunks) == 30  # the second half waits, in the spool

        client_dir.accept_writes()
        await connection.wait_for_status(
            lambda s: connected("user")(s) and s.last_error is None, 20
        )
        await wait_until_async(lambda: not spool.chunks, 20, "the second half acknowledged")
        assert connection.tokens.refresh_token != signed_in.refresh_token
        assert store.load() == connection.tokens
        final = connection.tokens
    assert server.dump(client_id) == "".join(texts).encode()
    assert_no_secret_shown(tokens_of(signed_in, final), caplog, statuses)


async def test_stopped_while_the_token_file_is_read_only_the_next_start_is_still_the_user(
    short_lived_server: ServerProcess,
    client_dir: RefusingDir,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = short_lived_server
    client_id = str(uuid.uuid4())
    store = FileTokenStore(client_dir.path / "tokens.json")
    signed_in = await login(server, "ada", client_id)
    store.save(signed_in)
    spool = MemorySpool()  # stands for the spool on disk, which outlives the process
    statuses: list[ConnectionStatus] = []
    texts = group(numbered_lines(400), 10)
    async with ServerConnection(
        server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=store,
        on_status=statuses.append,
        config=FAST,
    ) as connection:
        for text in texts[:20]:
            await connection.ensure_connected_and_send_log_chunk(text)
        await connection.wait_for_status(connected("user"), 20)
        await wait_until_async(lambda: not spool.chunks, 20, "the first half acknowledged")
        client_dir.refuse_writes("read-only")
        # Wait until the access token has expired and the client has acted on it: either
        # it holds (the file cannot be written) or it went ahead on a second socket.
        await until_the_server_has_sent_retry_auth(server, 20)
        await connection.wait_for_status(
            lambda s: (
                (s.last_error or "").startswith("cannot save tokens")
                or connection.counters.sockets_opened >= 2
            ),
            20,
        )
        for text in texts[20:]:
            await connection.ensure_connected_and_send_log_chunk(text)
    # Stopped with the file still read-only: for the disk, the same as a crash here.
    assert store.load() == signed_in
    client_dir.accept_writes()

    async with ServerConnection(
        server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=FileTokenStore(store.path),
        on_status=statuses.append,
        config=FAST,
    ) as restarted:
        await restarted.connect_to_server()
        status = await restarted.wait_for_status(connected(), 20)
        assert (status.identity, status.username) == ("user", "ada")
        assert status.last_error != SIGNED_OUT_MESSAGE
        await wait_until_async(lambda: not spool.chunks, 20, "the rest acknowledged")
        assert store.load() == restarted.tokens
        final = restarted.tokens
    assert server.dump(client_id) == "".join(texts).encode()
    assert_no_secret_shown(tokens_of(signed_in, final), caplog, statuses)


async def test_a_guest_token_that_cannot_be_saved_is_not_presented_until_it_is(
    server: ServerProcess,
    client_dir: RefusingDir,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    client_id = str(uuid.uuid4())
    # Full before the client starts: there is no room to set the token file's reserve.
    reason = client_dir.refuse_writes("full")
    store = FileTokenStore(client_dir.path / "tokens.json")
    expected = f"cannot save tokens: {reason} ({store.path})"
    spool = MemorySpool()
    statuses: list[ConnectionStatus] = []
    texts = group(numbered_lines(200), 10)
    async with ServerConnection(
        server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=store,
        on_status=statuses.append,
        config=FAST,
    ) as connection:
        for text in texts:
            await connection.ensure_connected_and_send_log_chunk(text)
        held = await connection.wait_for_status(lambda s: s.last_error == expected, 20)
        assert held.state == "disconnected"
        await wait_until_async(lambda: failed_saves(caplog) >= 3, 20, "three failed saves")
        assert connection.counters.sockets_opened == 1  # the tokenless one, nothing since
        assert connection.status().state == "disconnected"
        assert len(spool.chunks) == len(texts)
        stats = await server_stats(server)
        assert (stats["connections"], stats["guest_tokens_issued"]) == (1, 1)

        client_dir.accept_writes()
        status = await connection.wait_for_status(connected("guest"), 20)
        assert status.last_error is None
        await wait_until_async(lambda: not spool.chunks, 20, "every chunk acknowledged")
        assert connection.counters.sockets_opened == 2
        assert store.load() == connection.tokens
        assert connection.tokens.guest_token is not None
        final = connection.tokens
    stats = await server_stats(server)
    assert (stats["connections"], stats["guest_tokens_issued"]) == (2, 1)
    assert server.dump(client_id) == "".join(texts).encode()
    assert_no_secret_shown(tokens_of(final), caplog, statuses)


async def test_on_a_disk_that_fills_while_running_the_reserve_takes_the_guest_token(
    server: ServerProcess,
    client_dir: RefusingDir,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    client_id = str(uuid.uuid4())
    store = FileTokenStore(client_dir.path / "tokens.json")
    store.load()  # what a start does: the reserve is set aside while there is room
    assert (client_dir.path / "tokens.json.reserve").exists()
    client_dir.refuse_writes("full")
    spool = MemorySpool()
    statuses: list[ConnectionStatus] = []
    texts = group(numbered_lines(200), 10)
    async with ServerConnection(
        server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=store,
        on_status=statuses.append,
        config=FAST,
    ) as connection:
        for text in texts:
            await connection.ensure_connected_and_send_log_chunk(text)
        await connection.wait_for_status(connected("guest"), 20)
        await wait_until_async(lambda: not spool.chunks, 20, "every chunk acknowledged")
        assert failed_saves(caplog) == 0
        assert all(not (s.last_error or "").startswith("cannot save") for s in statuses)
        assert store.load() == connection.tokens
        assert connection.tokens.guest_token is not None
        final = connection.tokens
    assert server.dump(client_id) == "".join(texts).encode()
    assert_no_secret_shown(tokens_of(final), caplog, statuses)


class FailingAfterTheSaveBeforeARefresh(FileTokenStore):
    """A token file whose directory turns read-only right after a save of ``refresh_token``
    (the save a refresh starts with): the worst moment, as the server is about to rotate."""

    def __init__(self, path: Path, directory: RefusingDir, refresh_token: str | None) -> None:
        super().__init__(path)
        self.directory = directory
        self.refresh_token = refresh_token
        self.armed = False
        self.reason = ""

    def save(self, tokens: Tokens) -> None:
        super().save(tokens)
        if self.armed and tokens.refresh_token == self.refresh_token:
            self.armed = False
            self.reason = self.directory.refuse_writes("read-only")


async def test_rotated_tokens_that_cannot_be_saved_are_presented_only_once_saved(
    short_lived_server: ServerProcess,
    client_dir: RefusingDir,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = short_lived_server
    client_id = str(uuid.uuid4())
    signed_in = await login(server, "ada", client_id)
    store = FailingAfterTheSaveBeforeARefresh(
        client_dir.path / "tokens.json", client_dir, signed_in.refresh_token
    )
    store.save(signed_in)
    spool = MemorySpool()
    statuses: list[ConnectionStatus] = []
    texts = group(numbered_lines(400), 10)
    async with ServerConnection(
        server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=store,
        on_status=statuses.append,
        config=FAST,
    ) as connection:
        for text in texts[:20]:
            await connection.ensure_connected_and_send_log_chunk(text)
        await connection.wait_for_status(connected("user"), 20)
        await wait_until_async(lambda: not spool.chunks, 20, "the first half acknowledged")
        store.armed = True
        # The access token expires within 2 s: save (works), refresh (rotates), save (fails).
        held = await connection.wait_for_status(
            lambda s: (s.last_error or "").startswith("cannot save tokens"), 20
        )
        assert held.last_error == f"cannot save tokens: {store.reason} ({store.path})"
        assert held.state == "disconnected"
        opened = connection.counters.sockets_opened
        for text in texts[20:]:
            await connection.ensure_connected_and_send_log_chunk(text)
        await wait_until_async(lambda: failed_saves(caplog) >= 3, 20, "three failed saves")
        # Rotated: the server spent the token on disk, so the new ones are kept in memory...
        assert connection.tokens.refresh_token != signed_in.refresh_token
        assert store.load() == signed_in
        # ...and not presented while they are not on disk.
        assert connection.counters.sockets_opened == opened
        assert connection.status().state == "disconnected"

        client_dir.accept_writes()
        await connection.wait_for_status(
            lambda s: connected("user")(s) and s.last_error is None, 20
        )
        assert connection.counters.sockets_opened == opened + 1
        assert store.load() == connection.tokens
        await wait_until_async(lambda: not spool.chunks, 20, "the second half acknowledged")
        final = connection.tokens
    assert server.dump(client_id) == "".join(texts).encode()
    assert_no_secret_shown(tokens_of(signed_in, final), caplog, statuses)
