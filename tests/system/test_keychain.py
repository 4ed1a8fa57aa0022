"""Tokens in the OS keychain: a real GNOME Keyring (Secret Service) on a private D-Bus
session (``tests/support/desktop_session.py``), the real reference server and the real main
process. The session survives moving the tokens either way; the file then holds no token;
a keychain that cannot be reached is waited for, never replaced by a new guest; a
refreshed token is in the keychain before it is used. The move logic's order is also
checked on a stand-in keychain, where a failure can be injected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.main_process_runner import MainProcessRunner, headless_environment
from harness.server_process import REPOSITORY, ServerProcess
from harness.waiting import wait_until
from main_process.credentials import Tokens, TokenStore
from main_process.keychain import (
    SERVICE,
    KeychainTokenStore,
    KeychainUnavailable,
    marker_account,
    open_token_store,
)
from main_process.settings import TokenStorePreference
from tests.support.desktop_session import KeyringSession

PASSWORD = "correct horse battery staple"


@pytest.fixture
def keyring_session(tmp_path: Path) -> Iterator[KeyringSession]:
    with KeyringSession(tmp_path / "desktop") as session:
        yield session


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server", "--access-ttl", "3").start()
    added = process.run_cli("add-user", "ada", "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    yield process
    process.stop()


def _environment(session: KeyringSession | None) -> dict[str, str]:
    environment = headless_environment()
    return session.environment(environment) if session is not None else environment


def _cli(session: KeyringSession | None, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "main_process", *args],
        cwd=REPOSITORY,
        env=_environment(session),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _keychain_item(session: KeyringSession, data: Path) -> dict[str, Any] | None:
    """The item as the desktop's own tool reads it (``secret-tool``, libsecret)."""
    found = subprocess.run(
        ["secret-tool", "lookup", "service", SERVICE, "username", str(data)],
        env=session.environment(headless_environment()),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if found.returncode != 0 or not found.stdout:
        return None
    item: dict[str, Any] = json.loads(found.stdout)
    return item


def _run(
    data: Path, server: ServerProcess, session: KeyringSession | None, *args: str
) -> MainProcessRunner:
    """The main process, in the private desktop session (or with no keychain at all)."""
    runner = MainProcessRunner(data, "--server", server.url, *args)
    runner.environment = _environment(session)
    return runner.start()


def test_tokens_move_into_the_keychain_and_out_again_and_the_session_goes_on(
    tmp_path: Path, server: ServerProcess, keyring_session: KeyringSession
) -> None:
    data = tmp_path / "client"
    # Signed in with the tokens in the file (no keychain in this session).
    main = _run(data, server, None)
    try:
        _cli(
            None,
            "login",
            "--identifier",
            "ada",
            "--password-stdin",
            "--data-dir",
            str(data),
            stdin=PASSWORD + "\n",
        )
        status = main.wait_for_status(lambda s: s["identity"] == "user", 30, "ada")
        assert status["credentialStore"] == "file"
    finally:
        main.stop()
    in_file = json.loads((data / "tokens.json").read_text())
    assert in_file["refresh_token"]

    # The keychain appears: the tokens move into it, the session goes on.
    main = _run(data, server, keyring_session)
    try:
        status = main.wait_for_status(
            lambda s: s["identity"] == "user" and s["state"] == "connected", 30, "ada again"
        )
        assert status["credentialStore"].startswith("keychain")
        assert status["username"] == "ada"
    finally:
        main.stop()
    marker = (data / "tokens.json").read_text()
    assert marker_account(data / "tokens.json") == str(data)
    item = _keychain_item(keyring_session, data)
    assert item is not None
    assert item["username"] == "ada"
    assert item["refresh_token"] not in marker
    assert item["access_token"] not in marker

    # And back to the file on request.
    main = _run(data, server, keyring_session, "--token-store", "file")
    try:
        status = main.wait_for_status(
            lambda s: s["identity"] == "user" and s["state"] == "connected", 30, "ada in the file"
        )
        assert status["credentialStore"] == "file"
    finally:
        main.stop()
    assert json.loads((data / "tokens.json").read_text())["username"] == "ada"
    assert _keychain_item(keyring_session, data) is None


def test_a_refreshed_token_is_in_the_keychain_before_it_is_used(
    tmp_path: Path, server: ServerProcess, keyring_session: KeyringSession
) -> None:
    """Access tokens live 3 s: after several refreshes, a kill -9 and a restart find a
    refresh token the server has not spent (a spent one would end the session)."""
    data = tmp_path / "client"
    main = _run(data, server, keyring_session)
    _cli(
        keyring_session,
        "login",
        "--identifier",
        "ada",
        "--password-stdin",
        "--data-dir",
        str(data),
        stdin=PASSWORD + "\n",
    )
    first = _keychain_item(keyring_session, data)
    assert first is not None
    main.wait_for_status(lambda s: s["identity"] == "user", 30, "ada")

    def refreshed() -> bool:
        item = _keychain_item(keyring_session, data)
        return item is not None and item["refresh_token"] != first["refresh_token"]

    wait_until(refreshed, 30, "a refresh stored in the keychain", interval=0.5)
    main.kill()
    main = _run(data, server, keyring_session)
    try:
        status = main.wait_for_status(
            lambda s: s["identity"] == "user" and s["state"] == "connected", 30, "ada after kill"
        )
        assert status["credentialStore"].startswith("keychain")
    finally:
        main.stop()


def test_a_keychain_that_cannot_be_reached_is_waited_for(
    tmp_path: Path, server: ServerProcess, keyring_session: KeyringSession
) -> None:
    data = tmp_path / "client"
    main = _run(data, server, keyring_session)
    _cli(
        keyring_session,
        "login",
        "--identifier",
        "ada",
        "--password-stdin",
        "--data-dir",
        str(data),
        stdin=PASSWORD + "\n",
    )
    main.wait_for_status(lambda s: s["identity"] == "user", 30, "ada")
    main.stop()
    client_id = (data / "client-id").read_text().strip()

    keyring_session.stop_keyring()
    main = _run(data, server, keyring_session)
    try:
        status = main.wait_for_status(
            lambda s: "keychain" in (s["lastError"] or ""), 30, "the keychain named in lastError"
        )
        assert status["identity"] is None
        assert status["state"] == "disconnected"
        keyring_session.start_keyring()
        status = main.wait_for_status(
            lambda s: s["identity"] == "user" and s["state"] == "connected", 30, "ada once it is up"
        )
        assert status["lastError"] is None
    finally:
        main.stop()
    # Nothing was given away meanwhile: same installation, same user.
    assert (data / "client-id").read_text().strip() == client_id


def test_required_keychain_missing_is_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "main_process",
            "login",
            "--identifier",
            "ada",
            "--password-stdin",
            "--token-store",
            "keychain",
            "--data-dir",
            str(tmp_path / "c"),
            "--server",
            "http://127.0.0.1:9",
        ],
        cwd=REPOSITORY,
        env=headless_environment(),
        input="x\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("log-monitor: The token_store setting asks for the keychain")
    assert "Traceback" not in done.stderr


# -------------------------------------------------------------------- the move, step by step


class StandInKeychain:
    """A keychain in a dict; ``broken`` makes every call fail like a locked keychain."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}
        self.broken = False
        self.forgetful = False

    def _check(self, call: str) -> None:
        if self.broken:
            raise RuntimeError(f"{call}: the collection is locked")

    def get_password(self, service: str, username: str) -> str | None:
        self._check("get")
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self._check("set")
        if not self.forgetful:
            self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self._check("delete")
        del self.items[(service, username)]


SIGNED_IN = Tokens("access", "refresh", "guest", "1", "ada")


def test_the_file_is_replaced_by_the_marker_only_once_the_keychain_holds_the_tokens(
    tmp_path: Path,
) -> None:
    tokens_file = tmp_path / "tokens.json"
    TokenStore(tokens_file).save(SIGNED_IN)
    keychain = StandInKeychain()
    keychain.broken = True
    # A keychain that cannot be used: the file keeps the tokens.
    opened = open_token_store(tokens_file, tmp_path, "auto", lambda: (keychain, "stand-in"))
    assert opened.description == "file"
    assert TokenStore(tokens_file).load() == SIGNED_IN
    keychain.broken = False
    # A keychain that takes the tokens and does not keep them: the file keeps them.
    keychain.forgetful = True
    with pytest.raises(KeychainUnavailable):
        open_token_store(tokens_file, tmp_path, "auto", lambda: (keychain, "stand-in"))
    assert TokenStore(tokens_file).load() == SIGNED_IN
    keychain.forgetful = False
    opened = open_token_store(tokens_file, tmp_path, "auto", lambda: (keychain, "stand-in"))
    assert isinstance(opened.store, KeychainTokenStore)
    assert opened.store.load() == SIGNED_IN
    assert "refresh" not in tokens_file.read_text()


def test_tokens_held_in_an_unreachable_keychain_are_not_replaced(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    TokenStore(tokens_file).save(SIGNED_IN)
    keychain = StandInKeychain()
    open_token_store(tokens_file, tmp_path, "auto", lambda: (keychain, "stand-in"))
    keychain.broken = True
    preferences: tuple[TokenStorePreference, ...] = ("auto", "file", "keychain")
    for preference in preferences:
        with pytest.raises(KeychainUnavailable):
            open_token_store(tokens_file, tmp_path, preference, lambda: (keychain, "stand-in"))
    with pytest.raises(KeychainUnavailable):
        open_token_store(tokens_file, tmp_path, "auto", lambda: None)
    assert marker_account(tokens_file) == str(tmp_path)
