"""Trouble is reported, not fatal: missing files, directories, dangling symlinks, FIFOs,
files deleted before they were read, and (as uid nobody, in a child process) a file
whose read permission is removed. Other sources keep going."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from main_process.sources.file_follower import FileTrouble, open_log_file
from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import RunningSources, open_spool, spooled_text

REPOSITORY = Path(__file__).resolve().parents[2]


async def test_missing_directory_and_symlink_are_reported_others_continue(tmp_path: Path) -> None:
    good = tmp_path / "good.log"
    good.write_bytes(b"good line\n")
    missing = tmp_path / "missing.log"
    directory = tmp_path / "a-directory"
    directory.mkdir()
    dangling = tmp_path / "dangling.log"
    dangling.symlink_to(tmp_path / "nowhere.log")
    troubles: list[str] = []
    spool = open_spool(tmp_path / "data")
    sources = SourceSet(
        [str(missing), str(directory), str(dangling), str(good)],
        [],
        spool,
        on_trouble=troubles.append,
        linger=0.0,
        rescan_interval=0.1,
    )
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([good]), 5, "the good file")
        assert sorted(troubles) == sorted(
            [
                f"{missing} does not exist; it will be followed once it appears.",
                f"{directory} is a directory, not a log file (use a glob like {directory}/*.log).",
                f"{dangling} is a symbolic link to a missing file; it will be followed once the target exists.",
            ]
        )
        # Reported once each, not at every rescan.
        await running.wait_until(lambda: sources.counters().troubles == 3, 1, "the count")
        missing.write_bytes(b"it appeared\n")
        (tmp_path / "nowhere.log").write_bytes(b"the target appeared\n")
        await running.wait_until(lambda: running.quiet([missing, good]), 5, "the late files")
        await running.wait_until(
            lambda: "the target appeared\n" in spooled_text(spool), 5, "the symlink's target"
        )
    assert sources.counters().troubles == 3
    assert sources.last_trouble in troubles
    spool.close()


def test_open_log_file_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileTrouble, match="was deleted before it could be read"):
        open_log_file(str(tmp_path / "gone.log"))
    with pytest.raises(FileTrouble, match="is a directory, not a log file"):
        open_log_file(str(tmp_path))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # O_NONBLOCK: opening a FIFO with no writer must not hang the event loop.
    with pytest.raises(FileTrouble, match="is not a regular file"):
        open_log_file(str(fifo))


async def test_glob_match_deleted_before_it_is_opened_is_reported(tmp_path: Path) -> None:
    """The window between a match and its open: a file that vanishes there is reported
    as deleted before it was read (simulated by deleting it from the stat step)."""
    log = tmp_path / "short-lived.log"
    log.write_bytes(b"never read\n")
    troubles: list[str] = []
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(tmp_path / "*.log")], [], spool, on_trouble=troubles.append)
    original = sources._discovery.stat_for_following

    def stat_then_delete(path: str, explicit: bool) -> tuple[os.stat_result, bool] | None:
        found = original(path, explicit)
        Path(path).unlink(missing_ok=True)
        return found

    sources._discovery.stat_for_following = stat_then_delete  # type: ignore[method-assign]
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: bool(troubles), 5, "the report")
    assert troubles == [f"{log} was deleted before it could be read."]
    spool.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to uid nobody")
def test_permission_denied_as_an_unprivileged_user() -> None:
    """Root reads any file, so the child drops to uid nobody first (see the script)."""
    directory = Path(tempfile.mkdtemp(prefix="log-monitor-perm-"))
    try:
        directory.chmod(0o777)
        result = subprocess.run(
            [sys.executable, "-m", "tests.support.sources_unprivileged", str(directory)],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["uid"] == 65534
        assert report["locked_was_readable"] is False
        assert report["troubles"] == [f"{directory}/locked.log cannot be read: permission denied."]
        # The unreadable file did not stop the others.
        assert report["text_while_locked"] == "readable line\nfirst\n"
        # A file already open keeps being read after chmod 000; the locked one is read
        # once readable again.
        assert report["text_after"] == "readable line\nfirst\nsecond\nsecret line\n"
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)
