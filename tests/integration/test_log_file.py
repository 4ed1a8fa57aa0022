"""The log file: written by the running main process (0600, rotated at 1 MiB, at most
four files), shown by ``log-monitor logs`` (``--path``, the last lines, ``-f`` across a
rotation).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.main_process_runner import MainProcessRunner, headless_environment, log_monitor
from harness.server_process import REPOSITORY
from harness.waiting import wait_until
from main_process.log_file import BACKUPS, MAX_BYTES, add_log_file, last_lines, log_path


def test_the_running_main_process_writes_its_log_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    source = tmp_path / "app.log"
    source.write_text("hello\n")
    runner = MainProcessRunner(data, str(source))
    try:
        runner.start()
        runner.wait_for_status(lambda s: s["sentChunks"] >= 1, 30, "the first line sent")
        path_answer = log_monitor("logs", "--path", "--data-dir", str(data))
        assert path_answer.returncode == 0, path_answer.stderr
        path = Path(path_answer.stdout.strip())
        assert path == log_path(data)
        assert str(path).startswith(os.environ["XDG_STATE_HOME"])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        wait_until(lambda: "following" in path.read_text(), 10, "the log to name the source")
        last = log_monitor("logs", "-n", "3", "--data-dir", str(data))
        assert last.returncode == 0, last.stderr
        assert len(last.stdout.splitlines()) == 3
        assert last.stdout.splitlines() == path.read_text().splitlines()[-3:]
    finally:
        runner.ensure_stopped()


def test_a_second_instance_does_not_write_the_primary_s_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runner = MainProcessRunner(data)
    try:
        runner.start()
        before = log_path(data).read_text()
        second = log_monitor("run", "--headless", "--data-dir", str(data))
        assert second.returncode == 0
        assert "already running" in second.stderr
        assert "already running" not in log_path(data).read_text()[len(before) :]
    finally:
        runner.ensure_stopped()


def test_no_log_yet_is_one_sentence(tmp_path: Path) -> None:
    answer = log_monitor("logs", "--data-dir", str(tmp_path / "never-ran"))
    assert answer.returncode == 1
    assert answer.stderr.startswith("log-monitor: there is no log yet at ")


@pytest.fixture
def isolated_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_file_is_bounded(tmp_path: Path, isolated_root_logger: logging.Logger) -> None:
    data = tmp_path / "data"
    path = add_log_file(data)
    assert path is not None
    isolated_root_logger.setLevel(logging.INFO)
    line = "x" * 1000
    for _ in range(6 * MAX_BYTES // 1000):
        logging.getLogger("test").info("%s", line)
    files = sorted(path.parent.glob(path.name + "*"))
    assert len(files) == BACKUPS + 1
    assert all(f.stat().st_size <= MAX_BYTES + 2000 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    lines, size = last_lines(path, 3)
    assert len(lines) == 3
    assert size == path.stat().st_size


def test_logs_follow_prints_new_lines_across_a_rotation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = log_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("old line\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "main_process", "logs", "-f", "-n", "1", "--data-dir", str(data)],
        cwd=REPOSITORY,
        env=headless_environment(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "old line\n"
        with path.open("a") as file:
            file.write("appended\n")
        assert follower.stdout.readline() == "appended\n"
        path.rename(path.with_name(path.name + ".1"))
        path.write_text("after the rotation\n")
        assert follower.stdout.readline() == "after the rotation\n"
    finally:
        follower.terminate()
        follower.wait(10)
