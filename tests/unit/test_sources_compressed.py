"""Compressed logs: ``.gz``, ``.bz2`` and ``.xz`` backlog files are uploaded once each as
their decompressed text, recognised by their decompressed content (so a file uploaded
plain and compressed afterwards is not uploaded again), and a followed log's generation
that logrotate compresses is not uploaded a second time by the backlog.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from pathlib import Path

from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import (
    RunningSources,
    append_bytes,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    rotate_by_rename,
    spooled,
    upload_backlog,
)


def _write(path: Path, data: bytes, mtime: int) -> None:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


async def test_compressed_backlog_files_are_uploaded_as_text_oldest_first(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    _write(old / "app.log.4.xz", lzma.compress(numbered_lines(range(0, 100))), 1000)
    _write(old / "app.log.3.bz2", bz2.compress(numbered_lines(range(100, 200))), 2000)
    _write(old / "app.log.2.gz", gzip.compress(numbered_lines(range(200, 300))), 3000)
    _write(old / "app.log.1", numbered_lines(range(300, 400)), 4000)
    spool = open_spool(tmp_path / "data")
    progress = await upload_backlog(spool, [str(old)])
    assert progress.files_done == progress.files_total == 4
    # Text, in file order (oldest first), every line once.
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 400)])
    spool.close()


async def test_a_file_compressed_after_its_upload_is_not_uploaded_again(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    plain = old / "app.log.1"
    _write(plain, numbered_lines(range(0, 100)), 1000)
    spool = open_spool(tmp_path / "data")
    await upload_backlog(spool, [str(old)])
    # Compressed the way logrotate's delaycompress does it at the next rotation.
    _write(old / "app.log.2.gz", gzip.compress(plain.read_bytes()), 1000)
    plain.unlink()
    _write(old / "app.log.1", numbered_lines(range(100, 150)), 2000)
    progress = await upload_backlog(spool, [str(old)])
    assert progress.files_done == progress.files_total == 2
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 150)])
    spool.close()


async def test_a_followed_generation_compressed_by_rotation_is_not_uploaded_by_the_backlog(
    tmp_path: Path,
) -> None:
    """Following ``app.log`` with ``app.log.*`` as backlog: a rotated generation read to
    its end by the follower and compressed afterwards stays shipped once, after a restart
    too."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(numbered_lines(range(0, 100)))
    backlog = [str(logs / "app.log.*")]
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(log)], backlog, spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log], 100), 10, "the first lines")
        append_bytes(log, numbered_lines(range(100, 150)))
        rotate_by_rename(log, ".gz")
        append_bytes(log, numbered_lines(range(150, 200)))
        await running.wait_until(lambda: running.quiet([log], 200), 10, "every line")
    sources = SourceSet([str(log)], backlog, spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(
            lambda: sources.initial_scan_done and sources.progress().files_done == 1,
            10,
            "the compressed generation counted as done",
        )
        append_bytes(log, numbered_lines(range(200, 220)))
        await running.wait_until(lambda: running.quiet([log], 20), 10, "the new lines")
    assert sources.progress().files_total == 1
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 220)])
    spool.close()
