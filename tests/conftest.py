"""What every test shares: processes started by the tests keep their log files in a
temporary directory of the test session, not in the user's home, and keep their tokens
in files, not in the keychain of the session the tests run in (the keychain tests start a
keychain of their own: ``tests/support/desktop_session.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.main_process_runner import MainProcessRunner
from harness.server_process import ServerProcess


@pytest.fixture(autouse=True, scope="session")
def private_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``XDG_STATE_HOME`` (where platformdirs puts the user log dir on Linux) and keyring's
    null backend for this session and every process it starts."""
    state = tmp_path_factory.mktemp("state")
    changes = {
        "XDG_STATE_HOME": str(state),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    previous = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    yield state
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The reference server in its own process on a loopback port, data in the test's
    temporary directory (a test module that needs users or flags defines its own)."""
    process = ServerProcess(tmp_path / "server").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def runners() -> Iterator[list[MainProcessRunner]]:
    """Main processes a test starts (it appends them); each is stopped at the end."""
    started: list[MainProcessRunner] = []
    yield started
    for runner in started:
        runner.ensure_stopped()
