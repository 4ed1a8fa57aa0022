"""Order and exactly-once across log rotation by Debian's real ``logrotate``, end to end.

The real reference server and the real ``log-monitor run`` follow ``*.log`` in five
directories, one per rotation pattern (``tests/support/logrotate_scenarios.py``); one writer
process appends 2,000 lines a second to each log, holding its descriptor open with
``O_APPEND``; every directory is rotated about once a second for 20 seconds. Once with the
client running throughout, once with ``kill -9`` of the main process at random moments
(restarted after a random pause, so rotations also happen while it is down).

Then, per writer: every line still on disk (the log and every rotated file, compressed
or not) is stored exactly once, and everything stored is in the order written. With
``copytruncate`` the lines written between logrotate's copy and its truncation are on
disk nowhere, and with a truncation in place the lines not yet read are gone: those may
be missing, nothing else.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.main_process_runner import MainProcessRunner
from harness.server_process import REPOSITORY, ServerProcess
from harness.waiting import wait_until
from tests.support.logrotate_scenarios import (
    PATTERNS,
    RotationScenarios,
    describe_trouble,
    order_problems,
    stored_numbers,
)

RATE = 2000
DURATION = 20.0
ROTATE_EVERY = 1.0


def _start_writer(scenarios: RotationScenarios, stop_file: Path) -> subprocess.Popen[str]:
    logs = [str(scenarios.log(pattern)) for pattern in scenarios.patterns]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.rotating_writer", str(RATE), str(stop_file), *logs],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        text=True,
    )


def _rotate_for(
    scenarios: RotationScenarios, client: MainProcessRunner, rng: random.Random | None
) -> int:
    """Rotate every ``ROTATE_EVERY`` s for ``DURATION`` s; with ``rng``, also kill -9 the
    client at random moments and restart it after a random pause. Returns the kills."""
    start = time.monotonic()
    next_rotation = start + ROTATE_EVERY
    next_kill = start + rng.uniform(1.0, 3.0) if rng else float("inf")
    restart_at = float("inf")
    kills = 0
    while True:
        now = time.monotonic()
        if now >= start + DURATION and restart_at == float("inf"):
            return kills
        if now >= next_rotation:
            scenarios.rotate_all()
            next_rotation += ROTATE_EVERY
        if rng is not None and now >= next_kill and restart_at == float("inf"):
            client.kill()
            kills += 1
            restart_at = now + rng.uniform(0.1, 1.6)
        if now >= restart_at:
            client.start(wait=False)
            restart_at = float("inf")
            next_kill = now + rng.uniform(1.5, 3.5) if rng else float("inf")
        # Pacing the workload, not waiting for an outcome: rotations and kills are
        # meant to land at arbitrary moments of the client's work.
        time.sleep(max(0.0, min(next_rotation, next_kill, restart_at) - time.monotonic()))


@pytest.mark.parametrize("kill", [False, True], ids=["running", "kill-9"])
def test_logrotate_every_kept_line_once_in_order(tmp_path: Path, kill: bool) -> None:
    server = ServerProcess(tmp_path / "server").start()
    scenarios = RotationScenarios(tmp_path / "logs")
    client = MainProcessRunner(tmp_path / "client", "--server", server.url, *scenarios.globs())
    stop_file = tmp_path / "stop-writing"
    writer: subprocess.Popen[str] | None = None
    try:
        client.start()
        client.wait_for_status(lambda s: s["state"] == "connected", 30, "connected")
        writer = _start_writer(scenarios, stop_file)
        rng = random.Random(20261127) if kill else None
        kills = _rotate_for(scenarios, client, rng)
        stop_file.touch()
        out, _ = writer.communicate(timeout=30)
        written = {Path(path).parent.name: count for path, count in json.loads(out).items()}
        writer = None
        kept = {pattern: scenarios.kept_numbers(pattern) for pattern in PATTERNS}

        stored: dict[str, list[int]] = {}

        def everything_kept_is_stored() -> bool:
            stored.clear()
            stored.update(stored_numbers(server.dump(as_json=True)))
            return all(kept[p] <= set(stored.get(p, ())) for p in PATTERNS)

        try:
            wait_until(everything_kept_is_stored, 90, "every kept line on the server", 0.5)
        except TimeoutError:
            missing = {p: len(kept[p] - set(stored.get(p, ()))) for p in PATTERNS}
            raise AssertionError(f"kept lines never stored, per pattern: {missing}") from None
        client.stop()

        report = []
        for pattern in PATTERNS:
            numbers = stored.get(pattern, [])
            inversions, repeats = order_problems(numbers)
            report.append(
                f"{pattern}: written {written[pattern]}, kept {len(kept[pattern])}, stored "
                f"{len(numbers)}, {inversions} inversions, {repeats} repeats"
                + (f" ({describe_trouble(numbers)})" if inversions or repeats else "")
            )
        summary = f"{scenarios.rotations} rotations, {kills} kills\n" + "\n".join(report)
        print(summary)
        for pattern in PATTERNS:
            numbers = stored.get(pattern, [])
            assert order_problems(numbers) == (0, 0), summary
            assert set(numbers) <= set(range(written[pattern])), summary
            assert len(kept[pattern]) > 0, summary
        assert scenarios.rotations >= DURATION / ROTATE_EVERY - 1, summary
        if kill:
            assert kills >= 4, summary
    finally:
        if writer is not None:
            stop_file.touch()
            writer.kill()
            writer.wait()
        client.ensure_stopped()
        server.stop()
