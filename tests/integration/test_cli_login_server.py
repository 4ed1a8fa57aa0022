"""``log-monitor login`` / ``logout`` with no main process running reach the server ``run``
would ship to: the settings file (``--config``, ``$LOG_MONITOR_CONFIG`` or the platform's
default), overridden by ``$LOG_MONITOR_SERVER``, overridden by ``--server``; the embedded
server only when none of them names one.

The server is the real reference server on loopback; what it thinks is asked over its own
HTTP API (a refresh works only for a session it started; after the logout it is revoked).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.main_process_runner import log_monitor
from harness.server_process import ServerProcess, server_cli
from main_process.credentials import TokenStore

USER = "alice"
PASSWORD = "correct horse battery staple"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "server"
    added = server_cli(data, "add-user", USER, "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    process = ServerProcess(data).start()
    yield process
    process.stop()


@pytest.fixture
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No LOG_MONITOR_* from outside; the platform's config dir is a fresh one of ours."""
    for name in ("LOG_MONITOR_SERVER", "LOG_MONITOR_CONFIG", "LOG_MONITOR_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    config_home = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    return config_home


def refresh(server_url: str, refresh_token: str) -> tuple[int, dict[str, Any]]:
    """The server's own answer to a refresh with this token (its view of the session)."""
    request = urllib.request.Request(
        f"{server_url}/api/auth/refresh",
        data=json.dumps({"refreshToken": refresh_token}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            body: dict[str, Any] = json.loads(response.read())
            return response.status, body
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def write_config(path: Path, server_url: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'server = "{server_url}"\n')
    return path


# Each case: how the server is named, returning the extra command-line arguments.
CASES = [
    "environment",
    "config-from-environment",
    "config-flag",
    "default-config",
    "environment-over-config",
    "flag-over-environment",
]


def name_the_server(
    case: str, url: str, tmp_path: Path, config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    if case == "environment":
        monkeypatch.setenv("LOG_MONITOR_SERVER", url)
        return []
    if case == "config-from-environment":
        monkeypatch.setenv("LOG_MONITOR_CONFIG", str(write_config(tmp_path / "c.toml", url)))
        return []
    if case == "config-flag":
        return ["--config", str(write_config(tmp_path / "c.toml", url))]
    if case == "default-config":
        write_config(config_home / "log-monitor" / "config.toml", url)
        return []
    if case == "environment-over-config":
        monkeypatch.setenv("LOG_MONITOR_SERVER", url)
        return ["--config", str(write_config(tmp_path / "c.toml", UNREACHABLE))]
    if case == "flag-over-environment":
        monkeypatch.setenv("LOG_MONITOR_SERVER", UNREACHABLE)
        return ["--server", url]
    raise AssertionError(case)


@pytest.mark.parametrize("case", CASES)
def test_login_and_logout_without_a_main_process_use_the_server_run_would_use(
    case: str,
    tmp_path: Path,
    server: ServerProcess,
    clean_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "client"
    extra = name_the_server(case, server.url, tmp_path, clean_environment, monkeypatch)

    login = log_monitor(
        "login",
        "--identifier",
        USER,
        "--password-stdin",
        "--data-dir",
        str(data),
        *extra,
        input_text=PASSWORD + "\n",
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == f"log-monitor: signed in as {USER}"
    tokens = TokenStore(data / "tokens.json").load()
    assert tokens.username == USER
    assert tokens.refresh_token is not None
    assert not (data / "server").exists()  # no embedded server was started
    # The server started this session: it accepts the refresh token and names the user.
    status, body = refresh(server.url, tokens.refresh_token)
    assert status == 200, body
    assert body["user"]["username"] == USER
    next_refresh = str(body["refresh_token"])

    logout = log_monitor("logout", "--data-dir", str(data), *extra)
    assert logout.returncode == 0, logout.stderr
    assert TokenStore(data / "tokens.json").load().username is None
    # The logout reached the same server: it revoked the session.
    status, body = refresh(server.url, next_refresh)
    assert status == 401, body


def test_without_any_server_named_login_uses_the_embedded_server(
    tmp_path: Path, clean_environment: Path
) -> None:
    data = tmp_path / "client"
    login = log_monitor(
        "login",
        "--identifier",
        USER,
        "--password-stdin",
        "--data-dir",
        str(data),
        input_text=PASSWORD + "\n",
    )
    # The embedded server has no such user: it answered, and refused.
    assert login.returncode == 1
    assert login.stderr.strip() == "log-monitor: sign-in failed: wrong user name or password."
    assert (data / "server" / "server.sqlite3").exists()


def test_a_bad_server_setting_is_one_sentence_and_exit_2(
    tmp_path: Path, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_MONITOR_SERVER", "ftp://logs.example.com")
    logout = log_monitor("logout", "--data-dir", str(tmp_path / "client"))
    assert logout.returncode == 2
    assert logout.stderr.strip() == (
        "log-monitor: the server URL 'ftp://logs.example.com' must start with http(s):// or ws(s)://."
    )
    missing = tmp_path / "missing.toml"
    login = log_monitor(
        "login",
        "--identifier",
        USER,
        "--password-stdin",
        "--config",
        str(missing),
        "--data-dir",
        str(tmp_path / "client"),
        input_text=PASSWORD + "\n",
    )
    assert login.returncode == 2
    assert login.stderr.strip() == f"log-monitor: the config file {missing} does not exist."
