"""The front door of both programs: ``--version``, and ``status``'s mode (``--once``, the
default, or ``--follow``) as the command line reads it and as ``--help`` tells it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.main_process_runner import log_monitor
from harness.server_process import REPOSITORY
from main_process import cli
from main_process.version import client_version


def test_log_monitor_version_is_the_package_version() -> None:
    result = log_monitor("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"log-monitor {client_version()}\n"
    assert client_version()[0].isdigit()  # the installed metadata, not the fallback


def test_log_monitor_server_version_is_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--version"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"log-monitor-server {client_version()}\n"


@pytest.mark.parametrize(
    ("argv", "mode"),
    [
        (["status"], "once"),
        (["status", "--once"], "once"),
        (["status", "--json", "--once"], "once"),
        (["status", "--follow"], "follow"),
        (["status", "--json", "--follow"], "follow"),
    ],
)
def test_status_reads_its_mode_from_once_or_follow(argv: list[str], mode: str) -> None:
    assert cli.build_parser().parse_args(argv).mode == mode


def test_status_once_and_follow_together_is_a_usage_error(tmp_path: Path) -> None:
    result = log_monitor("status", "--once", "--follow", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_status_help_tells_the_modes_and_the_exit_status() -> None:
    result = log_monitor("status", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--once print the status once and exit (the default)" in text
    assert "--follow print every change until interrupted" in text
    assert "Exit status 1 when none runs for the data dir" in text


@pytest.mark.parametrize("mode", [[], ["--once"], ["--follow"]])
def test_status_with_nothing_running_is_one_sentence_and_exit_1(
    tmp_path: Path, mode: list[str]
) -> None:
    data = tmp_path / "nothing"
    result = log_monitor("status", "--json", *mode, "--data-dir", str(data))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"log-monitor: log-monitor is not running for {data}.\n"


def test_login_and_logout_help_name_the_server_they_use_without_a_main_process() -> None:
    for command in ("login", "logout"):
        result = log_monitor(command, "--help")
        assert result.returncode == 0
        text = " ".join(result.stdout.split())
        assert "--config CONFIG" in text
        assert "$LOG_MONITOR_SERVER" in text
