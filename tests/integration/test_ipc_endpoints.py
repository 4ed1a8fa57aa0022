"""Endpoints and single-instance: private modes, long paths, TCP with CURVE, the lock
and its recovery after kill -9, and a second instance asking the first for a window."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import zmq

from ipc.commands import CommandClient
from ipc.endpoints import (
    CurveKeys,
    EndpointError,
    Endpoints,
    NotRunningError,
    instance_key,
    make_private_dir,
    prepare_runtime_dir,
)
from ipc.host import connect_client, connect_subscriber
from ipc.instance import InstanceLock, ask_primary_to_open_window
from ipc.messages import GetStatus, Ok, OpenWindow, Ping, Status
from tests.support.ipc_helpers import RecordingHandler, next_delivery, running_host, short_dir

pytestmark = pytest.mark.timeout(60)

REPOSITORY = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_runtime_dir_and_socket_files_are_private() -> None:
    async with running_host() as host:
        runtime = host.endpoints.runtime_dir
        sockets = [runtime / "pub.sock", runtime / "cmd.sock"]
        assert all(stat.S_ISSOCK(os.lstat(path).st_mode) for path in sockets)
        assert mode(runtime) == 0o700
        for path in [*sockets, runtime / "endpoints.json"]:
            assert mode(path) & 0o077 == 0, f"{path.name} is {oct(mode(path))}"
        assert host.endpoints.publisher == f"ipc://{runtime}/pub.sock"


def test_instances_are_keyed_by_absolute_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert instance_key("data") == instance_key(tmp_path / "data")
    assert instance_key(tmp_path / "a") != instance_key(tmp_path / "b")
    assert len(instance_key("x")) == 16


def test_a_loose_existing_dir_is_tightened_and_a_foreign_one_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    make_private_dir(loose)
    assert mode(loose) == 0o700
    if os.getuid() != 0:
        pytest.skip("needs root to create another user's directory")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    with pytest.raises(EndpointError, match="another user"):
        make_private_dir(foreign)


def test_a_too_long_socket_path_fails_clearly_or_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_base = Path(tempfile.gettempdir()) / ("x" * 120)
    with pytest.raises(EndpointError, match="too long for a Unix socket path"):
        prepare_runtime_dir(tmp_path, base=long_base)
    # With the platform runtime dir too long, the short private temp dir is used.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(long_base))
    chosen = prepare_runtime_dir(tmp_path / "data")
    assert chosen.parent == Path(tempfile.gettempdir()) / f"lm-{os.getuid()}"
    assert len(str(chosen / "cmd.sock")) <= 103
    assert mode(chosen) == 0o700


def test_discover_says_when_no_main_process_runs() -> None:
    with short_dir() as root, pytest.raises(NotRunningError, match="No log-monitor main process"):
        Endpoints.discover(root / "data", base=root / "run")


async def test_tcp_with_curve_lets_in_only_the_instances_client_key() -> None:
    async with running_host(transport="tcp") as host:
        endpoints = host.endpoints
        assert endpoints.publisher.startswith("tcp://127.0.0.1:")
        assert endpoints.curve is not None
        curve_dir = endpoints.runtime_dir / "curve"
        assert mode(curve_dir) == 0o700
        assert all(mode(p) == 0o600 for p in curve_dir.rglob("*key*"))
        host.publisher.publish(Status(state="connected"))

        # A viewer finds the sockets and keys from the data dir alone.
        run_base = endpoints.runtime_dir.parent
        subscriber = connect_subscriber(host.data_dir, runtime_base=run_base)
        client = connect_client(host.data_dir, runtime_base=run_base)
        stranger = CommandClient(endpoints.commands)  # no keys
        public, secret = zmq.curve_keypair()
        impostor = CommandClient(
            endpoints.commands,
            curve=CurveKeys(
                endpoints.curve.server_public, b"", public, secret, endpoints.curve.clients_dir
            ),
        )
        try:
            assert (await next_delivery(subscriber)).message == Status(state="connected")
            assert await client.request(Ping(), timeout=5) == Ok()
            for outsider in (stranger, impostor):
                with pytest.raises(TimeoutError):
                    await outsider.request(GetStatus(), timeout=0.5)
        finally:
            for closing in (client, stranger, impostor):
                await closing.close()
            await subscriber.close()


def test_second_acquire_fails_while_held_and_recovers_after_kill_9(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ipc_lock_holder", str(tmp_path)],
        cwd=REPOSITORY,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        lock = InstanceLock(tmp_path)
        assert not lock.acquire()
        assert not lock.held
        assert lock.holder_pid() == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert holder.returncode == -signal.SIGKILL
        # No prompt, no stale-pid heuristics: the kernel released the lock.
        assert lock.acquire()
        assert lock.holder_pid() == os.getpid()
        second = InstanceLock(tmp_path)
        assert not second.acquire()
        lock.release()
        assert second.acquire()
        second.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


async def test_second_instance_asks_the_primary_to_open_a_window() -> None:
    handler = RecordingHandler()
    async with running_host(handler) as host:
        run_base = host.endpoints.runtime_dir.parent
        data = host.data_dir
        primary = InstanceLock(data)
        assert primary.acquire()
        try:
            second = InstanceLock(data)
            assert not second.acquire()
            reply = await asyncio.to_thread(ask_primary_to_open_window, data, runtime_base=run_base)
        finally:
            primary.release()
    assert reply == Ok(data={"handled": "OpenWindow"})
    assert handler.commands == [OpenWindow()]
