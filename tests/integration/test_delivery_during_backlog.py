"""Shipping does not wait for reading: while a large burst of lines is read into the
spool, the chunks already there keep going to the server.

The main process's one event loop both reads files into the spool and drives the
delivery. When reading took the loop in long stretches, a 150 MB burst was stored at
5-15 MB/s until the whole of it had been read, and only then at full speed: 2-11 % of a
64 MB burst was stored by the time all of it was in the spool, now about 60 %.
"""

from __future__ import annotations

from pathlib import Path

from harness.main_process_runner import MainProcessRunner
from harness.server_process import ServerProcess

BURST_BYTES = 64 * 1024 * 1024
LINE = b"x" * 99 + b"\n"
WRITE = LINE * (64 * 1024 // len(LINE))


def test_a_burst_is_shipped_while_it_is_still_being_read(
    server: ServerProcess, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first line\n")
    runner = MainProcessRunner(tmp_path / "data", "--server", server.url, str(log))
    runner.start()
    try:
        first = runner.wait_for_status(lambda s: s["sentChunks"] >= 1, 30, "the first line")
        sent_before = first["sentBytes"]
        with open(log, "ab") as file:
            for _ in range(BURST_BYTES // len(WRITE)):
                file.write(WRITE)
        written = BURST_BYTES // len(WRITE) * len(WRITE)
        # Once every byte of the burst is in the spool, how much of it has been stored?
        read_in = runner.wait_for_status(
            lambda s: s["bufferedBytes"] + s["sentBytes"] - sent_before >= written,
            60,
            "the burst read into the spool",
        )
        shipped_while_reading = read_in["sentBytes"] - sent_before
        runner.wait_for_status(
            lambda s: s["sentBytes"] - sent_before >= written, 120, "the burst shipped"
        )
    finally:
        runner.stop()
    assert shipped_while_reading >= written * 0.3, (shipped_while_reading, written)
