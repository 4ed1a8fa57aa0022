"""One main process per data dir, even while viewers look: ``is_running`` asks the instance
lock without taking it, and a ``run`` that finds the lock held waits for the holder to
answer or to let go instead of exiting 0 with nothing running.

The viewer is a real process calling ``log-monitor status --json --once`` (the CLI's own
``main``, in a loop, as fast as it goes); run as a script, this module is that process:
``python -m tests.integration.test_cli_instance_race DATA_DIR``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.main_process_runner import MainProcessRunner, log_monitor
from harness.processes import alive
from harness.server_process import REPOSITORY, ServerProcess
from harness.waiting import wait_until
from ipc.instance import InstanceLock
from main_process import cli

ROUNDS = 30


class StatusLoop:
    """A process calling ``log-monitor status --json --once`` in a tight loop."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_cli_instance_race", str(data_dir)],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        # The first call has been made: the loop is running.
        assert self.process.stdout.readline().strip() == "looping"

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self) -> dict[str, int]:
        """Stop the loop; its counts of calls and of answered calls."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counts

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def loop_status(data_dir: str) -> None:
    """The body of the status loop process (see the module docstring)."""
    stopping = False

    def stop(signum: int, frame: types.FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    calls = answered = 0
    sink = io.StringIO()
    while not stopping:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            code = cli.main(["status", "--json", "--once", "--data-dir", data_dir])
        sink.seek(0)
        sink.truncate()
        calls += 1
        answered += code == 0
        if calls == 1:
            print("looping", flush=True)
    print(json.dumps({"calls": calls, "answered": answered}), flush=True)


def settled(starters: list[MainProcessRunner]) -> bool:
    """Every run has ended but one, and that one answers: it is the primary. (None left
    counts as settled too; the caller's assertions say what went wrong.)"""
    still = [r for r in starters if r.process is not None and r.process.poll() is None]
    if len(still) != 1:
        return not still
    try:
        return still[0].status() is not None
    except RuntimeError:  # it exited between the two questions
        return False


@pytest.fixture
def cleanup() -> Iterator[list[MainProcessRunner | StatusLoop | subprocess.Popen[str]]]:
    started: list[MainProcessRunner | StatusLoop | subprocess.Popen[str]] = []
    yield started
    for thing in started:
        if isinstance(thing, MainProcessRunner):
            thing.ensure_stopped()
        elif isinstance(thing, StatusLoop):
            thing.kill()
        elif thing.poll() is None:
            thing.kill()
            thing.wait()


def test_looking_at_the_lock_never_takes_it(
    tmp_path: Path, cleanup: list[MainProcessRunner | StatusLoop | subprocess.Popen[str]]
) -> None:
    data = tmp_path / "client"
    data.mkdir()
    lock = InstanceLock(data)
    assert lock.acquire()  # the lock file exists, as after any earlier run
    lock.release()
    looking = StatusLoop(data)
    cleanup.append(looking)
    refused = 0
    attempts = 3000
    for _ in range(attempts):
        if lock.acquire():
            lock.release()
        else:
            refused += 1
    counts = looking.finish()
    assert counts["calls"] > 50, counts  # the viewer really looked meanwhile
    assert counts["answered"] == 0  # nothing runs here
    assert refused == 0, f"{refused} of {attempts} attempts found the lock taken by a viewer"


def test_is_running_sees_a_holder_in_another_process_and_in_this_one(tmp_path: Path) -> None:
    assert not cli.is_running(tmp_path / "never-used")
    assert not (tmp_path / "never-used").exists()
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
        assert cli.is_running(tmp_path)
        assert InstanceLock(tmp_path).holder_pid() == holder.pid  # asking wrote nothing
    finally:
        holder.kill()
        holder.wait()
    assert not cli.is_running(tmp_path)
    own = InstanceLock(tmp_path)
    assert own.acquire()
    try:
        assert cli.is_running(tmp_path)
        assert own.is_locked()
    finally:
        own.release()
    assert not cli.is_running(tmp_path)


@pytest.mark.timeout(900)
def test_every_run_started_while_status_polls_ends_with_exactly_one_main_process(
    tmp_path: Path,
    server: ServerProcess,
    cleanup: list[MainProcessRunner | StatusLoop | subprocess.Popen[str]],
) -> None:
    data = tmp_path / "client"
    source = tmp_path / "app.log"
    source.write_text("first line\n")
    # A first run leaves what every later round finds: the lock file, the spool, no
    # endpoints (a clean stop removes them).
    first = MainProcessRunner(data, str(source), "--server", server.url)
    cleanup.append(first)
    first.start()
    assert log_monitor("stop", "--data-dir", str(data)).returncode == 0
    assert first.wait(30) == 0

    looking = StatusLoop(data)
    cleanup.append(looking)
    for round_number in range(ROUNDS):
        # Odd rounds start two at once: one becomes the primary, the other hands over.
        starters = [
            MainProcessRunner(data, str(source), "--server", server.url)
            for _ in range(1 + round_number % 2)
        ]
        for index, runner in enumerate(starters):
            runner.log_path = tmp_path / f"round-{round_number}-{index}.log"
            cleanup.append(runner)
        for runner in starters:
            runner.start(wait=False)

        wait_until(
            functools.partial(settled, starters),
            90,
            f"round {round_number}: all but one run to finish",
        )
        survivors = [r for r in starters if r.process is not None and r.process.poll() is None]
        ended = [r for r in starters if r not in survivors]
        logs = {r.log_path.name: r.log_text() for r in starters}
        assert len(survivors) == 1, f"round {round_number}: no main process runs: {logs}"
        primary = survivors[0]
        assert primary.process is not None
        for runner in ended:
            assert runner.process is not None
            assert runner.process.returncode == 0, logs
            assert "already running" in runner.log_text(), logs
        assert InstanceLock(data).holder_pid() == primary.process.pid
        status = primary.wait_for_status(
            lambda s: s["state"] in ("connecting", "connected"), 60, "the primary's status"
        )
        assert status["server"] == server.url
        once = log_monitor("status", "--json", "--once", "--data-dir", str(data))
        assert once.returncode == 0, once.stderr
        assert json.loads(once.stdout)["clientId"] == status["clientId"]
        assert looking.running()

        stop = log_monitor("stop", "--data-dir", str(data))
        assert stop.returncode == 0, stop.stderr
        pid = primary.process.pid
        assert primary.wait(30) == 0, primary.log_text()
        assert not alive(pid)
        assert not cli.is_running(data)
        for runner in ended:
            runner.wait(5)

    counts = looking.finish()
    assert counts["answered"] >= ROUNDS, counts
    assert counts["calls"] > counts["answered"], counts  # it also looked while none ran


def test_a_run_waits_for_a_silent_holder_and_becomes_the_primary_when_it_lets_go(
    tmp_path: Path,
    server: ServerProcess,
    cleanup: list[MainProcessRunner | StatusLoop | subprocess.Popen[str]],
) -> None:
    data = tmp_path / "client"
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ipc_lock_holder", str(data)],
        cwd=REPOSITORY,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    cleanup.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    runner = MainProcessRunner(data, "--server", server.url)
    cleanup.append(runner)
    runner.start(wait=False)

    def waiting() -> bool:
        assert runner.process is not None
        if runner.process.poll() is not None:
            raise AssertionError(
                f"run exited with {runner.process.returncode}: {runner.log_text()}"
            )
        return "waiting up to" in runner.log_text()

    wait_until(waiting, 30, "the run to say it waits for the holder")
    assert f"process {holder.pid} holds the instance lock" in runner.log_text()
    holder.kill()
    holder.wait()
    runner.wait_for_status(lambda s: True, 30, "the waiting run to become the primary")
    assert runner.process is not None
    assert InstanceLock(data).holder_pid() == runner.process.pid


def test_a_holder_that_never_answers_is_one_sentence_and_exit_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cleanup: list[MainProcessRunner | StatusLoop | subprocess.Popen[str]],
) -> None:
    data = tmp_path / "client"
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ipc_lock_holder", str(data)],
        cwd=REPOSITORY,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    cleanup.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.setattr(cli, "HANDOVER_WAIT_SECONDS", 1.0)
    code = cli.main(
        ["run", "--headless", "--data-dir", str(data), "--server", "http://127.0.0.1:9"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == (
        f"log-monitor: process {holder.pid} holds the instance lock of {data} but has not "
        "answered for 1 s; stop it, or try again once it has started."
    )
    assert holder.poll() is None  # nobody took its lock


if __name__ == "__main__":
    loop_status(sys.argv[1])
