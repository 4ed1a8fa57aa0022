"""kill -9 of a process that follows a file, at random moments, while a writer runs.

Every chunk is appended with its checkpoint in one transaction, so whatever instant the
process dies at, the next start resumes right after the last committed chunk: at the end
the spool holds every line exactly once, in order. (The same test through the whole
``log-monitor run`` and the reference server belongs with the app; this one isolates the
sources and the spool.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from harness.waiting import wait_until
from tests.support.sources_helpers import (
    WriterThread,
    append_all,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    spooled,
)

REPOSITORY = Path(__file__).resolve().parents[2]
ROUNDS = 25
TOTAL = 200_000


def start_child(data_dir: Path, log: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sources_child", str(data_dir), str(log)],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def spooled_newlines(database: Path) -> int:
    """The lines in the spool while the child runs: its committed rows, read by another
    connection, and their texts in the segment files."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute(
            "SELECT text, byte_len, segment, segment_offset FROM chunks"
        ).fetchall()
    finally:
        connection.close()
    newlines = 0
    for text, byte_len, segment, offset in rows:
        if segment is None:
            newlines += str(text).count("\n")
            continue
        with open(
            database.with_name(f"{database.name}-segments") / f"{segment:08d}.seg", "rb"
        ) as f:
            f.seek(offset)
            newlines += f.read(byte_len).count(b"\n")
    return newlines


def test_kill_9_at_random_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()
    data_dir = tmp_path / "data"
    open_spool(data_dir).close()
    chooser = random.Random(5)

    def write() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        for start in range(0, TOTAL, 100):
            append_all(fd, numbered_lines(range(start, start + 100)))
            time.sleep(0.002)  # a steady writer (~4 s), so the kills land mid-stream
        os.close(fd)

    writer = WriterThread(write)
    writer.start()
    kills = 0
    while writer.is_alive() or kills < ROUNDS:
        child = start_child(data_dir, log)
        # Randomness decides when to kill, not a guess at when something is done.
        time.sleep(chooser.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        if kills >= 4 * ROUNDS:
            break
    writer.join_checked()
    child = start_child(data_dir, log)
    try:
        wait_until(
            lambda: spooled_newlines(data_dir / "spool.sqlite3") >= TOTAL,
            30,
            "the last run to catch up",
            interval=0.05,
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    spool = open_spool(data_dir)
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(TOTAL)])
    spool.close()
    assert kills >= ROUNDS
