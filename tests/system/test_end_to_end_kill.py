"""The delivery guarantee, end to end: ``log-monitor run FILE`` killed with SIGKILL 50 times
at random moments while a writer appends to the file; after the last restart the server
holds exactly what the writer wrote, once, in order."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from harness.main_process_runner import MainProcessRunner
from harness.server_process import ServerProcess
from tests.support.line_writer import LineWriter

ROUNDS = 50


def test_fifty_kills_while_a_writer_runs_lose_and_duplicate_nothing(
    tmp_path: Path, server: ServerProcess
) -> None:
    log_file = tmp_path / "app.log"
    log_file.touch()
    data = tmp_path / "client"
    chooser = random.Random(20261125)
    writer = LineWriter(log_file, seed=7).start()
    kills = 0
    try:
        for _ in range(ROUNDS):
            runner = MainProcessRunner(data, str(log_file), "--server", server.url)
            # Kill at any moment: during start-up, mid-read, mid-flush, between acks.
            runner.start(wait=chooser.random() < 0.5)
            time.sleep(chooser.uniform(0.0, 0.4))
            runner.kill()
            kills += 1
    finally:
        writer.stop()
    assert kills == ROUNDS
    expected = log_file.read_bytes()
    assert writer.lines_written > 1000

    final = MainProcessRunner(data, str(log_file), "--server", server.url)
    final.start()
    try:
        final.wait_for_status(
            lambda s: s["bufferedChunks"] == 0 and s["sentBytes"] >= len(expected),
            120,
            "everything the writer wrote to be acknowledged",
        )
    finally:
        final.stop()
    client_id = (data / "client-id").read_text().strip()
    stored = server.dump(client_id)
    if stored != expected:
        stored_lines = stored.decode().splitlines()
        duplicates = len(stored_lines) - len(set(stored_lines))
        pytest.fail(
            f"stored {len(stored)} bytes / {len(stored_lines)} lines ({duplicates} duplicated), "
            f"expected {len(expected)} bytes / {writer.lines_written} lines"
        )
