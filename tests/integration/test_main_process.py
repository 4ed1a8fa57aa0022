"""``log-monitor`` end to end: the real main process, real ipc, the real reference server."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from harness.main_process_runner import MainProcessRunner, log_monitor
from harness.server_process import ServerProcess
from harness.waiting import wait_until
from ipc.endpoints import Endpoints
from ipc.host import connect_subscriber
from ipc.messages import TOPIC_STATUS, Status
from main_process.credentials import load_or_create_client_id
from main_process.log_file import log_path
from main_process.settings import SettingsLayer, merge, read_environment_layer, read_file_layer
from main_process.spool.chunks import Spool

PASSWORD = "s3cret-pass-phrase"


def stored_chunks(server: ServerProcess) -> int:
    return len(server.run_cli("dump", "--json").stdout.splitlines())


def test_stdin_lines_reach_the_server_and_stop_keeps_the_spool(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    data = tmp_path / "client"
    main = MainProcessRunner(data, "-", "--server", server.url)
    runners.append(main)
    main.start(stdin=subprocess.PIPE)
    assert main.process is not None
    assert main.process.stdin is not None
    lines = "".join(f"2026-11-25 12:00:{i % 60:02d} event number {i} ✓\n" for i in range(2000))
    main.process.stdin.write(lines.encode())
    main.process.stdin.flush()
    status = main.wait_for_status(
        lambda s: s["state"] == "connected" and s["sentBytes"] >= len(lines.encode()),
        30,
        "all lines sent",
    )
    assert status["identity"] == "guest"
    assert status["bufferedChunks"] == 0
    assert status["server"] == server.url
    assert status["clientId"] == (data / "client-id").read_text().strip()

    once = log_monitor("status", "--json", "--once", "--data-dir", str(data))
    assert once.returncode == 0, once.stderr
    assert json.loads(once.stdout)["state"] == "connected"
    human = log_monitor("status", "--data-dir", str(data))
    assert "connected as guest" in human.stdout

    stop = log_monitor("stop", "--data-dir", str(data))
    assert stop.returncode == 0, stop.stderr
    assert main.wait(10) == 0
    assert (data / "spool.sqlite3").exists()
    assert server.dump(status["clientId"]) == lines.encode()


def test_status_and_stop_when_nothing_runs(tmp_path: Path) -> None:
    for command in (["status", "--json", "--once"], ["stop"]):
        result = log_monitor(*command, "--data-dir", str(tmp_path / "nothing"))
        assert result.returncode == 1
        assert (
            result.stderr.strip()
            == f"log-monitor: log-monitor is not running for {tmp_path / 'nothing'}."
        )
        assert result.stdout == ""


def test_second_run_on_the_same_data_dir_hands_over_and_exits_0(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    data = tmp_path / "client"
    main = MainProcessRunner(data, "--server", server.url)
    runners.append(main)
    main.start()
    second = log_monitor(
        "run", "--headless", "--data-dir", str(data), "--server", server.url, timeout=30
    )
    assert second.returncode == 0
    assert "already running" in second.stderr
    assert main.status() is not None  # the first one is unharmed


def test_kill_9_mid_flush_then_restart_delivers_everything_exactly_once(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    data = tmp_path / "client"
    data.mkdir(mode=0o700)
    client_id = load_or_create_client_id(data)
    texts = [f"chunk {n:05d} " + "x" * 2000 + "\n" for n in range(3000)]
    with Spool(data / "spool.sqlite3", client_id) as spool:
        for text in texts:
            spool.append(text)

    # A small window makes the flush long enough to be killed in the middle of it.
    first = MainProcessRunner(data, "--server", server.url, "--window", "2")
    runners.append(first)
    first.start()
    wait_until(lambda: stored_chunks(server) >= 300, 60, "part of the spool to be stored")
    first.kill()
    part = stored_chunks(server)
    assert part < len(texts), "the kill came too late to test anything"

    second = MainProcessRunner(data, "--server", server.url)
    runners.append(second)
    second.start()
    second.wait_for_status(lambda s: s["bufferedChunks"] == 0, 120, "the spool to drain")
    second.stop()
    assert server.dump(client_id) == "".join(texts).encode()
    records = [json.loads(line) for line in server.run_cli("dump", "--json").stdout.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(texts) + 1))


class FrameRecorder:
    """Every frame the main process publishes, caught by a raw SUB subscribed to all."""

    def __init__(self, data_dir: Path) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(Endpoints.discover(data_dir).publisher)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if poller.poll(50):
                self.frames.extend(self._socket.recv_multipart())

    def close(self) -> bytes:
        self._stop.set()
        self._thread.join(5)
        self._socket.close(0)
        self._context.term()
        return b"\n".join(self.frames)


def test_login_and_logout_through_ipc_keep_secrets_off_every_frame(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    added = server.run_cli("add-user", "alice", "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0
    data = tmp_path / "client"
    main = MainProcessRunner(data, "--server", server.url)
    runners.append(main)
    main.start()
    main.wait_for_status(lambda s: s["identity"] == "guest", 30, "guest identity")
    recorder = FrameRecorder(data)
    try:
        wrong = log_monitor(
            "login",
            "--identifier",
            "alice",
            "--password-stdin",
            "--data-dir",
            str(data),
            input_text="not-it\n",
        )
        assert wrong.returncode == 1
        assert wrong.stderr.strip() == "log-monitor: sign-in failed: wrong user name or password."
        login = log_monitor(
            "login",
            "--identifier",
            "alice",
            "--password-stdin",
            "--data-dir",
            str(data),
            input_text=PASSWORD + "\n",
        )
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == "log-monitor: signed in as alice"
        status = main.wait_for_status(
            lambda s: s["identity"] == "user" and s["state"] == "connected", 30, "the user identity"
        )
        assert status["username"] == "alice"
        tokens = json.loads((data / "tokens.json").read_text())
        assert stat.S_IMODE((data / "tokens.json").stat().st_mode) == 0o600
        logout = log_monitor("logout", "--data-dir", str(data))
        assert logout.returncode == 0, logout.stderr
        main.wait_for_status(lambda s: s["identity"] == "guest", 30, "guest identity again")
    finally:
        captured = recorder.close()
    assert b"alice" in captured  # the frames were really recorded...
    secrets = [PASSWORD, "not-it", *(v for k, v in tokens.items() if k.endswith("token") and v)]
    assert len(secrets) >= 4
    log_file = log_path(data).read_text()
    assert "signed in" in log_file or "alice" in log_file  # the log file saw the sign-in...
    for secret in secrets:
        assert secret.encode() not in captured  # ...and no secret is in any of them
        assert secret not in main.log_text()
        assert secret not in log_file
    after = json.loads((data / "tokens.json").read_text())
    assert after.get("access_token") is None
    assert after.get("refresh_token") is None
    assert after.get("guest_token") == tokens.get("guest_token")


def test_login_and_logout_with_no_main_process(tmp_path: Path, server: ServerProcess) -> None:
    server.run_cli("add-user", "bob", "--password-stdin", input_text=PASSWORD + "\n")
    data = tmp_path / "client"
    login = log_monitor(
        "login",
        "--identifier",
        "bob",
        "--password-stdin",
        "--server",
        server.url,
        "--data-dir",
        str(data),
        input_text=PASSWORD + "\n",
    )
    assert login.returncode == 0, login.stderr
    tokens = json.loads((data / "tokens.json").read_text())
    assert tokens["username"] == "bob"
    assert tokens["refresh_token"]
    logout = log_monitor("logout", "--server", server.url, "--data-dir", str(data))
    assert logout.returncode == 0, logout.stderr
    assert json.loads((data / "tokens.json").read_text()).get("refresh_token") is None
    # The server was told: the old refresh token no longer works.
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/api/auth/refresh",
        data=json.dumps({"refreshToken": tokens["refresh_token"]}).encode(),
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--window", "0"], {}, "--window must be a whole number from 1 to 256 (got 0)."),
        (["--server", "ftp://example"], {}, "must start with http(s):// or ws(s)://."),
        ([], {"LOG_MONITOR_WINDOW": "eight"}, "LOG_MONITOR_WINDOW='eight' is not usable"),
        ([], {"LOG_MONITOR_HEADLESS": "maybe"}, "is not a yes/no value."),
    ],
)
def test_bad_settings_are_one_sentence_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        ["log-monitor", "run", "--headless", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_settings_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'server = "http://file:1"\nwindow = 3\nsources = ["/a.log"]\nack_timeout = 9\n'
    )
    env = {"LOG_MONITOR_WINDOW": "5", "LOG_MONITOR_SOURCES": f"/b.log{os.pathsep}/c.log"}
    settings = merge(
        tmp_path,
        read_file_layer(config, env),
        read_environment_layer(env),
        SettingsLayer(server="ws://flag:2"),
    )
    assert settings.server == "ws://flag:2"
    assert settings.window == 5
    assert settings.sources == ("/b.log", "/c.log")
    assert settings.ack_timeout == 9
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(Exception, match="no_such_setting"):
        read_file_layer(bad, {})


async def test_a_late_subscriber_gets_the_main_process_status_at_once(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    data = tmp_path / "client"
    main = MainProcessRunner(data, "--server", server.url)
    runners.append(main)
    main.start()
    main.wait_for_status(lambda s: s["state"] == "connected", 30, "connected")
    subscriber = connect_subscriber(data, topics=(TOPIC_STATUS,))
    try:
        started = time.perf_counter()
        delivery = await asyncio.wait_for(anext(aiter(subscriber)), 5)
        elapsed = time.perf_counter() - started
    finally:
        await subscriber.close()
    assert isinstance(delivery.message, Status)
    assert delivery.message.state == "connected"
    assert delivery.message.identity == "guest"
    # The cached value is re-sent when the subscription arrives: milliseconds, not the
    # next change (which, on an idle connection, may be minutes away).
    assert elapsed < 0.5, f"late joiner waited {elapsed * 1000:.0f} ms"


def test_status_follow_prints_each_change(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    data = tmp_path / "client"
    main = MainProcessRunner(data, "--server", server.url)
    runners.append(main)
    main.start()
    main.wait_for_status(lambda s: s["state"] == "connected", 30, "connected")
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "main_process",
            "status",
            "--follow",
            "--json",
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["state"] == "connected"
        server.stop()  # the connection drops: a new status must follow
        states = set()
        while "disconnected" not in states and "connecting" not in states:
            line = follower.stdout.readline()
            assert line, "the follower ended"
            record = json.loads(line)
            if record.get("type") == "status":
                states.add(record["state"])
    finally:
        follower.terminate()
        follower.wait(10)
        server.start()
