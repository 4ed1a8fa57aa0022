"""Units of the server's transport defences: the log's rate limit (with a fake clock), who
counts as a direct local peer, the one message limit, and the ``serve`` flags' bounds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.server_process import server_cli
from server.app import ServerConfig, build, transport_message_limit
from server.log_limits import RepeatedMessageFilter, install, uninstall
from server.peers import is_direct_local_request

MIB = 1024 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def limited() -> Iterator[tuple[logging.Logger, RepeatedMessageFilter, Recorder, FakeClock]]:
    clock = FakeClock()
    log_filter = RepeatedMessageFilter(interval=10.0, clock=clock)
    logger = logging.getLogger("log_monitor_server.test_units")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    recorder = Recorder()
    logger.addHandler(recorder)
    install(log_filter, [logger.name])
    yield logger, log_filter, recorder, clock
    uninstall(log_filter, [logger.name])
    logger.removeHandler(recorder)


def test_one_line_per_kind_per_interval_then_the_count_of_the_rest(
    limited: tuple[logging.Logger, RepeatedMessageFilter, Recorder, FakeClock],
) -> None:
    logger, _, recorder, clock = limited
    for peer in range(1000):
        logger.warning("connection from %s refused", f"10.0.0.{peer}")
    assert recorder.lines == ["WARNING connection from 10.0.0.0 refused"]
    clock.now += 10
    logger.warning("connection from %s refused", "10.0.0.7")
    assert recorder.lines[1] == (
        "WARNING connection from 10.0.0.7 refused "
        "[and 999 more like this, not logged, in the 10 s before]"
    )
    assert len(recorder.lines) == 2


def test_held_back_lines_are_counted_once_their_interval_is_over(
    limited: tuple[logging.Logger, RepeatedMessageFilter, Recorder, FakeClock],
) -> None:
    logger, log_filter, recorder, clock = limited
    for _ in range(5):
        logger.error("socket.accept() out of system resource\nsocket: <fd=%d>", 6)
    log_filter.report_suppressed()
    assert len(recorder.lines) == 1  # the interval is not over: nothing to say yet
    clock.now += 12
    log_filter.report_suppressed()
    assert recorder.lines[1] == (
        "ERROR 4 more like this, not logged, in the last 12 s: "
        "socket.accept() out of system resource"
    )
    log_filter.report_suppressed()
    assert len(recorder.lines) == 2  # counted once


def test_kinds_are_apart_and_info_lines_are_not_limited(
    limited: tuple[logging.Logger, RepeatedMessageFilter, Recorder, FakeClock],
) -> None:
    logger, log_filter, recorder, _ = limited
    for _ in range(3):
        logger.info("client %s authenticated as guest", "c")
        logger.warning("first kind %s", 1)
        logger.warning("second kind %s", 2)
    assert recorder.lines.count("INFO client c authenticated as guest") == 3
    assert recorder.lines.count("WARNING first kind 1") == 1
    assert recorder.lines.count("WARNING second kind 2") == 1
    log_filter.report_suppressed(final=True)
    assert "WARNING 2 more like this, not logged, in the last 0 s: first kind %s" in recorder.lines


def scope(host: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "client": (host, 40000), "headers": headers or []}


def test_direct_local_requests_are_loopback_and_not_forwarded() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert is_direct_local_request(scope(host)), host
    for host in ("203.0.113.7", "10.0.0.1", "::ffff:203.0.113.7", "not an address"):
        assert not is_direct_local_request(scope(host)), host
    for header in (b"X-Forwarded-For", b"forwarded", b"X-Real-IP"):
        assert not is_direct_local_request(scope("127.0.0.1", [(header, b"203.0.113.7")]))
    assert not is_direct_local_request({"type": "http", "client": None, "headers": []})


def test_one_message_limit_for_engine_io_and_the_websocket(tmp_path: Path) -> None:
    assert transport_message_limit(1 * MIB) == 8 * MIB
    assert transport_message_limit(4 * MIB) == 32 * MIB
    built = build(ServerConfig(data_dir=tmp_path / "server", max_chunk_bytes=2 * MIB))
    try:
        assert built.message_limit == 16 * MIB
        assert built.sio.eio.max_http_buffer_size == built.message_limit
    finally:
        built.store.close()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--handshake-timeout", "nan"),
        ("--handshake-timeout", "inf"),
        ("--handshake-timeout", "0"),
        ("--max-connections", "0"),
        ("--max-connections-per-peer", "-1"),
    ],
)
def test_serve_refuses_limits_that_are_not_limits(tmp_path: Path, flag: str, value: str) -> None:
    result = server_cli(tmp_path / "server", "serve", "--port", "0", flag, value)
    assert result.returncode == 2, result
    error = result.stderr.decode().strip().splitlines()[-1]
    assert flag in error, error
    assert "Traceback" not in result.stderr.decode()
