"""The fault campaign in the suite: its quick mode must lose, duplicate and reorder nothing.

Also checks the campaign's own parts, so a green campaign means something: the line
comparison counts what it claims to, and the proxy's modes do what they say (pass moves
bytes, cut closes both sides, a black hole holds bytes without closing and releases them
in order on ``pass``).

``CHAOS_SEED=N`` replays a campaign; the seed of every run is in its first output line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.support.chaos_campaign import KINDS, compare_lines, run_campaign
from tests.support.chaos_proxy import ChaosProxy

WRITTEN = [f"{n:08d} w1 line {n}" for n in range(1, 7)]


def test_compare_counts_nothing_when_everything_arrived_once_in_order() -> None:
    count = compare_lines(WRITTEN, list(WRITTEN))
    assert (count.lost, count.duplicated, count.out_of_order, count.garbage) == (0, 0, 0, 0)
    assert count.stored == count.written == 6


def test_compare_counts_lost_duplicated_reordered_and_garbage_lines() -> None:
    stored = [WRITTEN[0], WRITTEN[2], WRITTEN[1], WRITTEN[2], "00000005 w1 mangled", WRITTEN[5]]
    count = compare_lines(WRITTEN, stored)
    # 4 never arrived, 5 arrived mangled (garbage, so lost too); 3 twice; 2 after 3.
    assert count.lost == 2
    assert count.duplicated == 1
    assert count.out_of_order == 1
    assert count.garbage == 1


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_proxy() -> Iterator[ChaosProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = ChaosProxy("127.0.0.1", server.server_address[1]).start()
    try:
        yield proxy
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()


def _connect(proxy: ChaosProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def _receive(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            break
        data += part
    return data


def test_proxy_passes_cuts_and_black_holes(echo_proxy: ChaosProxy) -> None:
    with _connect(echo_proxy) as conn:
        conn.sendall(b"hello")
        assert _receive(conn, 5) == b"hello"
        echo_proxy.set_mode("cut")
        # The cut closes the client's side: the next read sees the end (or a reset).
        with contextlib.suppress(ConnectionResetError):
            assert conn.recv(10) == b""
    echo_proxy.set_mode("blackhole")
    with _connect(echo_proxy) as conn:
        conn.settimeout(0.5)
        conn.sendall(b"first")
        with pytest.raises(TimeoutError):
            conn.recv(10)
        conn.sendall(b"second")
        echo_proxy.set_mode("pass")
        conn.settimeout(5)
        assert _receive(conn, 11) == b"firstsecond"


@pytest.mark.timeout(420)
def test_quick_campaign_loses_duplicates_and_reorders_nothing() -> None:
    seed = int(os.environ["CHAOS_SEED"]) if os.environ.get("CHAOS_SEED") else None
    lines: list[str] = []
    campaign = run_campaign("quick", seed, report=lines.append)
    log = "\n".join(lines) + "\n\n" + campaign.table()
    print(log)
    assert sorted({result.kind for result in campaign.rounds}) == sorted(KINDS), log
    total = campaign.totals()
    assert total.written > 0, log
    assert (total.lost, total.duplicated, total.out_of_order) == (0, 0, 0), log
    assert not total.problems, log
