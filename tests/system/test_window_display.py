"""Windows on real display servers, and a window that cannot start.

The other window tests render offscreen; these start ``log-monitor run`` with a real
display, as a person's desktop has one: an X server (``Xvfb``, which picks a free display
number itself and says which through ``-displayfd`` once it accepts clients) and a
Wayland compositor (weston's headless backend). ``QT_QPA_PLATFORM`` is left unset for X,
so Qt chooses its xcb plugin exactly as on a desktop, and the window reports which
platform plugin it runs on.

A window that cannot start is made with real Qt failures, no package uninstalled: an X
display no server listens on, and a platform plugin Qt does not have. The main process
must then say why in one sentence (status ``lastError`` and stderr) and not start the
renderer host again and again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.waiting import wait_until
from tests.support.display_servers import DISPLAY_READY_TIMEOUT_S, DisplayServer, start_xvfb
from tests.support.live_main import START_TIMEOUT_S, LiveMain

pytestmark = pytest.mark.timeout(240)


def free_x_display() -> str:
    """A display number no X server has claimed (no socket, no lock file)."""
    for number in range(150, 400):
        claimed = Path(f"/tmp/.X11-unix/X{number}"), Path(f"/tmp/.X{number}-lock")
        if not any(path.exists() for path in claimed):
            return f":{number}"
    raise RuntimeError("no free X display number between 150 and 400")


@pytest.fixture
def xvfb(tmp_path: Path) -> Iterator[DisplayServer]:
    server = start_xvfb(tmp_path / "xvfb.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def weston(tmp_path: Path) -> Iterator[DisplayServer]:
    """weston with its headless backend, on a socket in a private runtime dir."""
    # A short path: the socket's path must fit in sockaddr_un.
    runtime = Path(tempfile.mkdtemp(prefix="lm-wl-"))
    runtime.chmod(0o700)
    socket_name = "wayland-lm"
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    with open(tmp_path / "weston.log", "ab") as log:
        process = subprocess.Popen(
            ["weston", "--backend=headless-backend.so", f"--socket={socket_name}", "--idle-time=0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )

    def listening() -> bool:
        if process.poll() is not None:
            log_text = (tmp_path / "weston.log").read_text(errors="replace")
            raise RuntimeError(f"weston exited with {process.returncode}: {log_text}")
        return (runtime / socket_name).exists()

    # An absolute WAYLAND_DISPLAY: the client needs no XDG_RUNTIME_DIR of weston's, and
    # the main process keeps the test's (its ipc endpoints are found through it).
    server = DisplayServer(
        process,
        {
            "WAYLAND_DISPLAY": str(runtime / socket_name),
            "QT_QPA_PLATFORM": "wayland",
            "DISPLAY": None,
        },
    )
    try:
        wait_until(listening, DISPLAY_READY_TIMEOUT_S, "weston's socket")
        yield server
    finally:
        server.stop()
        shutil.rmtree(runtime, ignore_errors=True)


def status_json(main: LiveMain) -> dict[str, object]:
    result = main.command("status", "--json", "--once")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert isinstance(status, dict)
    return status


def assert_one_window_shows_the_state(main: LiveMain, platform: str) -> None:
    [ref] = main.wait_windows(1)
    main.watch.wait(
        lambda: bool(main.watch.statuses) and main.watch.status().state == "connected",
        30,
        "the main process connected",
    )
    result = main.command("windows", "--json")
    assert result.returncode == 0, result.stderr
    [window] = json.loads(result.stdout)["windows"]
    status = main.watch.status()
    assert (window["host"], window["window"]) == (ref.host, ref.window)
    assert window["answered"] is True
    assert window["ready"] is True
    assert window["platform"] == platform  # Qt's platform plugin: a real display, not offscreen
    assert window["state"] == status.state == "connected"
    assert window["clientId"] == status.client_id
    assert window["windows"] == 1
    assert status_json(main)["windows"] == 1


def test_a_window_opens_on_an_x_server(xvfb: DisplayServer, tmp_path: Path) -> None:
    main = LiveMain(tmp_path / "client", 1, None, display=xvfb.env)
    try:
        assert_one_window_shows_the_state(main, "xcb")
    finally:
        main.close()


def test_a_window_opens_on_a_wayland_compositor(weston: DisplayServer, tmp_path: Path) -> None:
    main = LiveMain(tmp_path / "client", 1, None, display=weston.env)
    try:
        assert_one_window_shows_the_state(main, "wayland")
    finally:
        main.close()


def started_hosts(main: LiveMain) -> list[str]:
    return re.findall(r"renderer host (\d+) started with \d+ windows", main.log_text())


def assert_reported_once_and_not_retried(main: LiveMain, sentence: str) -> None:
    """``sentence`` (a regex) is ``lastError`` and one stderr line; the renderer host that
    failed is not started again while the main process goes on for a few more seconds."""
    main.watch.wait(
        lambda: (
            bool(main.watch.statuses)
            and re.fullmatch(sentence, main.watch.status().last_error or "") is not None
            and main.watch.status().windows == 0
        ),
        START_TIMEOUT_S,
        f"lastError to match {sentence!r} with no window left",
    )
    failed_at = time.time()
    last_error = main.watch.status().last_error
    assert last_error is not None
    status = status_json(main)
    assert status["lastError"] == last_error
    assert status["windows"] == 0
    # One sentence on the terminal, whatever the number of windows that failed alike.
    lines = main.log_text().splitlines()
    assert lines.count(f"log-monitor: {last_error}") == 1, main.log_text()
    # The main loop reaps an ended host before each publish: statuses published 3 s later
    # show it went on, and no host was started again meanwhile.
    main.watch.wait(
        lambda: main.watch.statuses[-1][0] >= failed_at + 3.0,
        30,
        "the main process to publish for 3 s more",
    )
    assert len(started_hosts(main)) == 1, main.log_text()
    assert all(s.windows == 0 for t, s in main.watch.statuses if t >= failed_at)
    assert main.running


def test_a_window_without_an_x_server_is_one_sentence_and_not_retried(tmp_path: Path) -> None:
    display = free_x_display()
    main = LiveMain(
        tmp_path / "client",
        2,
        None,
        display={"DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": None},
    )
    try:
        assert_reported_once_and_not_retried(
            main,
            rf"Windows cannot open: no X server answers on display {re.escape(display)} "
            r"\(DISPLAY\); start one there, or run with --headless\.",
        )
    finally:
        main.close()


def test_a_platform_plugin_qt_does_not_have_is_one_sentence_and_not_retried(
    tmp_path: Path,
) -> None:
    main = LiveMain(
        tmp_path / "client",
        1,
        None,
        display={"DISPLAY": free_x_display(), "QT_QPA_PLATFORM": "nosuch", "WAYLAND_DISPLAY": None},
    )
    try:
        assert_reported_once_and_not_retried(
            main,
            r'Windows cannot open: Qt has no platform plugin "nosuch" \(QT_QPA_PLATFORM\); '
            r"it has [a-z0-9, -]*\bxcb\b[a-z0-9, -]*\bwayland\b[a-z0-9, -]*\.",
        )
    finally:
        main.close()
