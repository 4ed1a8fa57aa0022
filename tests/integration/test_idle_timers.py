"""Timers only for what is due: the main process's publisher sleeps until something
changes or is due, so its parts say when they next need it.

``NotificationPolicy.next_deadline`` is the unreachable timer (a publisher that polled
``tick`` every 100 ms needed none); the main process, imported for a remote server, does
not import the reference server (whose import alone costs ~0.4 s of every start).
"""

from __future__ import annotations

import subprocess
import sys

from harness.server_process import REPOSITORY
from ipc.messages import ConnectionStateName, Status
from main_process.notifications import NotificationPolicy


def status(state: ConnectionStateName) -> Status:
    return Status(state=state, server="http://logs.example", client_id="id")


def test_the_unreachable_timer_says_when_it_is_due_and_nothing_after() -> None:
    policy = NotificationPolicy(unreachable_after=60.0)
    assert policy.next_deadline() is None
    policy.on_status(status("disconnected"), now=100.0)
    assert policy.next_deadline() == 160.0
    assert policy.tick(159.9) == []
    [notification] = policy.tick(160.0)
    assert notification.kind == "unreachable"
    assert policy.next_deadline() is None  # notified: nothing more is due
    policy.on_status(status("connected"), now=161.0)
    assert policy.next_deadline() is None


def test_a_user_disconnect_stops_the_unreachable_timer() -> None:
    policy = NotificationPolicy(unreachable_after=60.0)
    policy.on_status(status("disconnected"), now=0.0)
    policy.on_user_disconnect(1.0)
    assert policy.next_deadline() is None


def test_the_main_process_does_not_import_the_reference_server() -> None:
    probe = (
        "import sys, main_process.cli, main_process.app\n"
        "loaded = sorted(m for m in sys.modules if m == 'server' or m.startswith('server.'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPOSITORY, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
