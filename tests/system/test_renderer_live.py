"""Real windows on a real main process and a real server: the whole chain, offscreen.

``log-monitor run --demo --windows 3 --server URL`` against ``ServerProcess``; the windows
are real pywebview windows (Qt WebEngine) in one real ``python -m renderer --data-dir D``
host process. The test watches what every page shows through the windows' own
``WindowState`` reports (each a readback of the page's DOM, with the wall-clock time of
every state change the page showed), and the main process's ``Status`` on the same
publisher. Nothing sleeps to synchronise: every wait is for a condition, with a deadline.

One main process is shared by the tests (starting windows is the expensive part); a test
that kills it leaves a state the next test's fixture repairs (a new main process is
started when the last one is gone), so each test also runs on its own.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.processes import alive, descendants
from harness.server_process import ServerProcess, server_cli
from harness.waiting import wait_until
from ipc.host import connect_sync_client
from ipc.inspection import ask_windows
from ipc.messages import (
    Connect,
    Ok,
)
from renderer.ipc_link import DEFAULT_SILENCE_S
from tests.support.live_main import PASSWORD, START_TIMEOUT_S, USER, LiveMain
from tests.support.star_citizen_install import make_install

pytestmark = pytest.mark.timeout(240)

# The bound the issue sets: every window shows a new state within 200 ms.
BOUND_MS = 200.0


@dataclass
class Shared:
    server: ServerProcess
    tmp: Path
    game_dir: Path
    main: LiveMain | None = None
    generation: int = 0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("live")
    server_dir = tmp / "server"
    added = server_cli(server_dir, "add-user", USER, "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    server = ServerProcess(server_dir).start()
    game_dir = tmp / "wine-prefix"
    make_install(game_dir, ("LIVE", "PTU"))
    holder = Shared(server, tmp, game_dir)
    try:
        yield holder
    finally:
        if holder.main is not None:
            holder.main.close()
        server.stop()


@pytest.fixture
def live(shared: Shared) -> LiveMain:
    """The shared main process with at least three ready windows (restarted if needed)."""
    if shared.server.process is None:
        shared.server.start()
    if shared.main is None or not shared.main.running:
        if shared.main is not None:
            shared.main.close()
        shared.generation += 1
        shared.main = LiveMain(
            shared.tmp / f"client{shared.generation}",
            3,
            shared.server.url,
            # A Star Citizen install (two channels, in a Wine prefix) the windows name.
            extra=("--game", "star-citizen", "--game-dir", str(shared.game_dir)),
        )
        shared.main.wait_windows(3)  # before counting what is missing: they are coming
    main = shared.main
    missing = 3 - len(main.watch.ready_windows())
    for _ in range(max(0, missing)):
        reply = main.command("run")  # the second instance asks the first for a window
        assert reply.returncode == 0, reply.stderr
    main.wait_windows(3)
    main.watch.wait(
        lambda: main.watch.statuses[-1][1].state == "connected", 30, "the main process connected"
    )
    return main


def first_change_after(view: dict[str, Any], since_ms: float) -> tuple[str, int] | None:
    for state, at in view.get("stateChanges") or []:
        if at >= since_ms:
            return str(state), int(at)
    return None


def test_three_windows_show_each_server_stop_and_start_within_200_ms(
    live: LiveMain, shared: Shared
) -> None:
    """Measured per window from the page's own timestamps of its state changes: DOM change
    minus the server's stop or start (end to end; the start is followed by ``Connect``, so
    the reconnect is measured rather than the backoff's wait), and DOM change minus the
    moment this test received the main process's new status (the windows' part; this
    process's receive time can trail a window's paint by a few ms, hence values near 0)."""
    watch = live.watch
    pids = live.wait_windows(3)[:3]
    server = shared.server
    rows: list[str] = []
    for round_ in range(2):
        # ---- stop: every window leaves "connected" -------------------------------------
        stopped_ms = time.time() * 1000
        server.stop()
        stopped_wall = stopped_ms / 1000

        def all_left(stopped: float = stopped_ms) -> bool:
            return all(first_change_after(watch.windows[p].view, stopped) is not None for p in pids)

        watch.wait(all_left, 10, "every window to show the server gone")
        published = next(
            t for t, s in watch.statuses if t >= stopped_wall and s.state != "connected"
        )
        published_ms = published * 1000
        stop_changes = {p: first_change_after(watch.windows[p].view, stopped_ms) for p in pids}
        # ---- start: Connect skips the backoff wait, so the reconnect is measured, not it
        server.start()
        started_ms = time.time() * 1000
        with connect_sync_client(live.data_dir) as client:
            assert isinstance(client.request(Connect(), timeout=10), Ok)

        def all_back(started: float = started_ms) -> bool:
            return all(
                any(
                    state == "connected" and at >= started
                    for state, at in watch.windows[p].view.get("stateChanges") or []
                )
                for p in pids
            )

        watch.wait(all_back, 15, "every window to show the server back")
        connected = next(
            t for t, s in watch.statuses if t * 1000 >= started_ms and s.state == "connected"
        )
        back = {
            p: next(
                at
                for state, at in watch.windows[p].view["stateChanges"]
                if state == "connected" and at >= started_ms
            )
            for p in pids
        }
        # ---- the bound, and the same state everywhere ----------------------------------
        stop_states = {change[0] for change in stop_changes.values() if change}
        assert len(stop_states) == 1, f"windows showed different states: {stop_changes}"
        stop_end_to_end = [change[1] - stopped_ms for change in stop_changes.values() if change]
        stop_window = [change[1] - published_ms for change in stop_changes.values() if change]
        start_window = [at - connected * 1000 for at in back.values()]
        start_end_to_end = [at - started_ms for at in back.values()]
        rows.append(
            f"round {round_}: stop→{stop_states.pop()} end-to-end "
            f"{[round(x) for x in stop_end_to_end]} ms, after publish "
            f"{[round(x) for x in stop_window]} ms; start→connected after publish "
            f"{[round(x) for x in start_window]} ms, after server ready (incl. reconnect) "
            f"{[round(x) for x in start_end_to_end]} ms"
        )
        assert max(stop_end_to_end) <= BOUND_MS, rows[-1]
        assert max(start_window) <= BOUND_MS, rows[-1]
        assert max(stop_window) <= BOUND_MS, rows[-1]
        assert max(start_end_to_end) <= BOUND_MS, rows[-1]
    print("\n" + "\n".join(rows))


def test_windows_json_lists_every_window_and_what_its_page_shows(live: LiveMain) -> None:
    refs = live.watch.ready_windows()
    [host] = {ref.host for ref in refs}  # one renderer host holds every window
    result = live.command("windows", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # Offscreen there is no tray: the host reports none.
    assert report["host"] == host
    assert report["tray"] is None
    listed = report["windows"]
    assert sorted((w["host"], w["window"]) for w in listed) == [(r.host, r.window) for r in refs]
    status = live.watch.status()
    render_processes = set()
    for window in listed:
        assert window["answered"] is True
        assert window["ready"] is True
        assert window["state"] == status.state
        assert window["identity"] == "guest"
        assert window["clientId"] == status.client_id
        assert window["server"] == status.server
        assert window["windows"] == len(refs)
        assert set(window["counters"]) >= {"bufferedChunks", "sentChunks", "deadLettered"}
        assert window["counters"]["sentChunks"] > 0  # the demo log is being shipped
        # Each page has a render process of its own, a child of the host.
        assert window["renderProcess"] in descendants(host)
        render_processes.add(window["renderProcess"])
    assert len(render_processes) == len(refs)
    text = live.command("windows")
    assert text.returncode == 0, text.stderr
    assert f"renderer host pid {host}" in text.stdout
    assert len(text.stdout.splitlines()) == 2 + len(refs)


def test_every_window_says_which_game_is_followed_and_where_the_tokens_are(
    live: LiveMain,
) -> None:
    status = live.watch.status()
    shared_dir = live.data_dir.parent / "wine-prefix"
    assert status.game.startswith("Star Citizen: LIVE, PTU in ")
    assert str(shared_dir) in status.game
    assert status.credential_store  # "file" or "keychain (…)", whatever this machine has
    refs = live.watch.ready_windows()
    script = (
        "(function () { const shown = (id) => {"
        " const node = document.getElementById(id);"
        " return node.hidden ? null : node.textContent; };"
        " return JSON.stringify("
        "[shown('game-label'), shown('game'), shown('credential-store')]); })()"
    )
    answers = ask_windows(live.data_dir, "evaluate", script=script, windows=tuple(refs))
    assert {a.ref for a in answers} == set(refs)
    for answer in answers:
        assert answer.ok, answer.error
        assert json.loads(answer.result) == ["Game", status.game, status.credential_store]


def test_screenshot_saves_a_png_of_every_window(live: LiveMain, tmp_path: Path) -> None:
    refs = live.watch.ready_windows()
    result = live.command("screenshot", str(tmp_path / "shots"))
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert sorted(paths) == sorted(
        tmp_path / "shots" / f"window-{ref.host}-{ref.window}.png" for ref in refs
    )
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(data[16:20], "big")
        height = int.from_bytes(data[20:24], "big")
        assert (width, height) == (1100, 800)
        assert len(data) > 20_000  # a rendered page, not a blank rectangle


def test_a_window_opened_late_shows_the_current_state_at_its_first_paint(
    live: LiveMain,
) -> None:
    before = set(live.watch.windows)
    hosts = {ref.host for ref in before}
    second = live.command("run")  # a second instance asks the first for a window
    assert second.returncode == 0, second.stderr
    assert "asked it to open a window" in second.stderr
    watch = live.watch
    watch.wait(
        lambda: any(
            seen.first_with_status is not None
            for ref, seen in watch.windows.items()
            if ref not in before
        ),
        START_TIMEOUT_S,
        "the late window's first painted status",
    )
    ref, seen = next((r, s) for r, s in watch.windows.items() if r not in before)
    # It opened in the running host, not in a process of its own.
    assert ref.host in hosts
    first = seen.first_with_status
    assert first is not None
    status = watch.status()
    # The first state this page ever painted is the present one, not a stale or empty one.
    assert first["stateChanges"][0][0] == status.state == "connected"
    assert first["identity"] == "guest"
    assert first["clientId"] == status.client_id
    # ...and it was painted promptly after the page loaded. Measured 30-180 ms on the
    # shared 2-core machine while other suites run, hence the generous bound.
    watch.wait(lambda: watch.windows[ref].state.ready, 10, "the late window's ready report")
    timings = watch.windows[ref].view["timings"]
    assert timings["firstStatusMs"] - timings["loadedMs"] < 500, timings


def test_signing_in_through_the_page_reaches_every_window(live: LiveMain) -> None:
    watch = live.watch
    refs = watch.ready_windows()
    script = (
        "(function () {"
        f" document.getElementById('login-identifier').value = {json.dumps(USER)};"
        f" document.getElementById('login-password').value = {json.dumps(PASSWORD)};"
        " document.getElementById('login-form').requestSubmit();"
        " return true; })()"
    )
    try:
        answers = ask_windows(live.data_dir, "evaluate", script=script, windows=(refs[0],))
        assert [a.ref for a in answers] == [refs[0]]
        assert answers[0].ok, answers[0].error

        def everyone_signed_in() -> bool:
            return all(
                watch.windows[r].view.get("identity") == "user"
                and watch.windows[r].view.get("identityText") == USER
                for r in refs
                if r in watch.windows
            )

        watch.wait(everyone_signed_in, 15, f"every window to show {USER}")
        status = watch.status()
        assert status.authenticated
        assert status.identity == "user"
        assert status.username == USER
        form_window = watch.windows[refs[0]].view
        assert form_window["actionResult"] == "Signed in."
        assert form_window["passwordFieldEmpty"] is True
        assert form_window["signOutShown"] is True
        assert form_window["signInShown"] is False
    finally:
        result = live.command("logout")
        assert result.returncode == 0, result.stderr
    watch.wait(
        lambda: all(watch.windows[r].view.get("identity") == "guest" for r in refs),
        15,
        "every window back to guest",
    )


def window_side_processes(live: LiveMain) -> list[int]:
    """The renderer hosts and every process below them (QtWebEngineProcess children)."""
    return [pid for host in live.watch.hosts() for pid in (host, *descendants(host))]


def test_a_hung_main_process_closes_every_window_by_heartbeat_silence(live: LiveMain) -> None:
    """SIGSTOP: the main process's pid lives on, so only the heartbeat's silence tells."""
    live.wait_windows(3)
    processes = window_side_processes(live)
    stopped_at = time.monotonic()
    live.process.send_signal(signal.SIGSTOP)
    try:
        # Polling /proc: there is no event to wait on.
        wait_until(
            lambda: not any(alive(pid) for pid in processes),
            DEFAULT_SILENCE_S + 5.0,
            f"the window processes {processes} to end",
            interval=0.05,
        )
        took = time.monotonic() - stopped_at
    finally:
        live.process.send_signal(signal.SIGCONT)
    # Not before the silence bound: a window must not give up on a merely busy main process.
    assert took >= DEFAULT_SILENCE_S - 1.0, took
    print(f"\nall windows gone {took:.1f} s after the main process stopped answering")
    # The host closed them because the main process looked gone: it is not started again.
    live.watch.wait(
        lambda: live.watch.statuses[-1][1].windows == 0, 10, "the main process to count 0 windows"
    )
    assert live.running


def test_killing_the_main_process_closes_every_window(live: LiveMain) -> None:
    live.wait_windows(3)
    processes = window_side_processes(live)
    killed_at = time.monotonic()
    live.process.kill()
    live.process.wait(10)
    # Polling /proc: there is no event to wait on.
    wait_until(
        lambda: not any(alive(pid) for pid in processes),
        5.0,
        f"the window processes {processes} to end",
    )
    print(f"\nall windows gone {(time.monotonic() - killed_at) * 1000:.0f} ms after SIGKILL")
