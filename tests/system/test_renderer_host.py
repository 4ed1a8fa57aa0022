"""One renderer host for every window: eight real windows in one process, and its faults.

``log-monitor run --demo --windows 8`` against a real server, offscreen; the windows are
real pywebview windows (Qt WebEngine) in one ``python -m renderer`` host. What each page
shows is read from the windows' own ``WindowState`` reports (``tests.support.live_main``'s
``Watch``). Faults are real: ``SIGKILL`` of one page's render process (a QtWebEngineProcess
child of the host) and of the host itself. Every wait is for a condition, with a deadline.

The last test records, with ``strace`` on the host, every byte its ZeroMQ threads read
while a user signs in through a page, and looks for the password and the tokens in them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.processes import alive, descendants
from harness.server_process import ServerProcess, server_cli
from harness.waiting import wait_until
from ipc.host import connect_sync_client
from ipc.inspection import ask_windows
from ipc.messages import Connect, Disconnect, Ok, OpenWindow
from main_process.log_file import log_path
from tests.support.live_main import PASSWORD, START_TIMEOUT_S, USER, LiveMain

pytestmark = pytest.mark.timeout(300)

WINDOWS = 8
# Targets: a reloaded page repaints within 1 s; a killed host's windows are back within
# 3 s. Asserted with room for a shared 2-core machine; the measured figures are printed.
REPAINT_TARGET_MS = 1000.0
RESTART_TARGET_S = 3.0
RESTART_BOUND_S = 8.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("host-server")
    added = server_cli(directory, "add-user", USER, "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    process = ServerProcess(directory).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def main(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMain]:
    live = LiveMain(tmp_path_factory.mktemp("host") / "client", WINDOWS, server.url)
    try:
        live.wait_windows(WINDOWS)
        live.watch.wait(lambda: live.watch.status().state == "connected", 30, "connected")
        yield live
    finally:
        live.close()


def windows_json(main: LiveMain) -> list[dict[str, Any]]:
    result = main.command("windows", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["windows"]
    assert isinstance(listed, list)
    return listed


def renderer_hosts_of(pid: int) -> list[int]:
    """The ``python -m renderer`` processes below ``pid``."""
    found = []
    for child in descendants(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"renderer" in command and b"-m" in command:
            found.append(child)
    return found


def sent_chunks(main: LiveMain) -> int:
    return main.watch.status().sent_chunks


def command(main: LiveMain, *commands: Any) -> None:
    with connect_sync_client(main.data_dir) as client:
        for each in commands:
            assert isinstance(client.request(each, timeout=10), Ok)


def test_eight_windows_in_one_host_show_the_same_status_change(main: LiveMain) -> None:
    watch = main.watch
    refs = main.wait_windows(WINDOWS)
    assert len(refs) == WINDOWS
    # One host process holds them all; each page has a render process of its own, and
    # every page lives in the one shared off-the-record profile.
    [host] = renderer_hosts_of(main.process.pid)
    assert {ref.host for ref in refs} == {host}
    listed = windows_json(main)
    assert len(listed) == WINDOWS
    assert len({w["renderProcess"] for w in listed}) == WINDOWS
    assert set(descendants(host)) >= {w["renderProcess"] for w in listed}
    profiles = {w["profile"] for w in listed}
    assert len(profiles) == 1, profiles
    assert profiles.pop().startswith("off-the-record:")
    assert watch.status().windows == WINDOWS
    # A change of state reaches every one of them.
    for wanted, ask in (("disconnected", Disconnect()), ("connected", Connect())):
        since = time.time() * 1000
        command(main, ask)

        def everyone(state: str = wanted, after: float = since) -> bool:
            return all(
                any(s == state and at >= after for s, at in watch.windows[r].view["stateChanges"])
                for r in refs
            )

        watch.wait(everyone, 15, f"all {WINDOWS} windows to show {wanted}")
        published = (
            next(t for t, s in watch.statuses if t * 1000 >= since and s.state == wanted) * 1000
        )
        shown = [
            next(
                at for s, at in watch.windows[r].view["stateChanges"] if s == wanted and at >= since
            )
            for r in refs
        ]
        print(f"\n{wanted}: DOM changed {[round(at - published) for at in shown]} ms after publish")
        assert max(shown) - published < 500, shown


def test_a_window_opened_late_paints_the_present_in_the_running_host(main: LiveMain) -> None:
    watch = main.watch
    [host] = renderer_hosts_of(main.process.pid)
    before = set(watch.windows)
    # A present that differs from the defaults: disconnected, with a retry countdown.
    command(main, Disconnect())
    watch.wait(lambda: watch.status().state == "disconnected", 10, "disconnected")
    try:
        # The page's New window button, as a person would click it.
        clicker = watch.ready_windows()[0]
        asked = time.time() * 1000
        [answer] = ask_windows(
            main.data_dir,
            "evaluate",
            script="document.getElementById('open-window').click(), true",
            windows=(clicker,),
        )
        assert answer.ok, answer.error

        def late() -> dict[str, Any] | None:
            for ref, seen in watch.windows.items():
                if ref not in before and seen.first_with_status is not None:
                    return seen.first_with_status
            return None

        watch.wait(lambda: late() is not None, START_TIMEOUT_S, "the late window's first paint")
        first = late()
        assert first is not None
        assert first["stateChanges"][0][0] == "disconnected"
        painted = first["stateChanges"][0][1]
        print(f"\nlate window: asked → first status painted {painted - asked:.0f} ms")
        assert painted - asked < 2000
        assert renderer_hosts_of(main.process.pid) == [host]  # opened in the running host
        assert {ref.host for ref in watch.windows} == {host}
    finally:
        command(main, Connect())
    watch.wait(lambda: watch.status().state == "connected", 30, "connected again")


def test_killing_one_pages_render_process_reloads_only_that_page(main: LiveMain) -> None:
    watch = main.watch
    refs = main.wait_windows(WINDOWS)
    listed = {(w["host"], w["window"]): w for w in windows_json(main)}
    victim = refs[1]
    others = [ref for ref in refs if ref != victim]
    process = listed[(victim.host, victim.window)]["renderProcess"]
    before_others = {
        ref: (listed[(ref.host, ref.window)]["renderProcess"], watch.windows[ref].first_with_status)
        for ref in others
    }
    shipped = sent_chunks(main)
    killed = time.time() * 1000
    os.kill(process, signal.SIGKILL)

    def repainted() -> bool:
        view = watch.windows[victim].view
        return (
            view.get("reloads") == 1
            and bool(view.get("hasStatus"))
            and view["timings"]["repaintedMs"] is not None
        )

    watch.wait(repainted, 15, "the page to be reloaded and repainted")
    view = watch.windows[victim].view
    print(
        f"\npage reloaded: repainted {view['timings']['repaintedMs']} ms after its render "
        f"process died (target {REPAINT_TARGET_MS:.0f} ms)"
    )
    assert view["timings"]["repaintedMs"] < REPAINT_TARGET_MS
    assert view["renderProcess"] not in (None, process)
    # The new page shows the present (state, counters, the lines the old page showed).
    assert view["state"] == watch.status().state == "connected"
    assert view["lines"] > 0
    assert view["stateChanges"][0][1] >= killed  # a fresh page, not the old one
    # Nobody else noticed: same render process, never reloaded, same first paint.
    after = {(w["host"], w["window"]): w for w in windows_json(main)}
    for ref in others:
        window = after[(ref.host, ref.window)]
        assert window["reloads"] == 0
        assert window["renderProcess"] == before_others[ref][0]
        assert watch.windows[ref].first_with_status is before_others[ref][1]
    assert len(after) == len(refs)
    assert main.running
    watch.wait(lambda: sent_chunks(main) > shipped, 15, "shipping to go on")


def test_kill_9_of_the_host_brings_the_same_windows_back(main: LiveMain) -> None:
    watch = main.watch
    refs = main.wait_windows(WINDOWS)
    count = len(watch.ready_windows())
    [host] = renderer_hosts_of(main.process.pid)
    geometries = sorted(json.dumps(w["geometry"]) for w in windows_json(main))
    engine = descendants(host)
    shipped = sent_chunks(main)
    killed_at = time.monotonic()
    os.kill(host, signal.SIGKILL)

    def back() -> bool:
        fresh = [
            ref
            for ref, seen in watch.windows.items()
            if ref.host != host and seen.first_with_status is not None and alive(ref.host)
        ]
        return len(fresh) >= count

    watch.wait(back, 30, f"{count} windows back in a new host")
    took = time.monotonic() - killed_at
    print(f"\nhost SIGKILL → {count} windows painted again in {took:.2f} s")
    assert took < RESTART_BOUND_S, took
    [new_host] = renderer_hosts_of(main.process.pid)
    assert new_host != host
    main.host_pids.add(new_host)
    # The dead host's windows were said to be closed; the same number came back, where
    # they were, and the count never dropped to nothing.
    watch.wait(lambda: all(ref in watch.closed for ref in refs), 10, "the old windows closed")
    new_refs = [ref for ref in watch.ready_windows() if ref.host == new_host]
    assert len(new_refs) == count
    assert sorted(json.dumps(w["geometry"]) for w in windows_json(main)) == geometries
    assert all(s.windows == count for t, s in watch.statuses if t >= time.time() - took)
    assert not [pid for pid in engine if alive(pid)]  # its render processes went with it
    assert main.running
    watch.wait(lambda: sent_chunks(main) > shipped, 15, "shipping to go on")
    if took > RESTART_TARGET_S:
        print(f"slower than the {RESTART_TARGET_S:.0f} s target")


def test_exit_with_windows_quits_with_the_last_window(
    server: ServerProcess, tmp_path: Path
) -> None:
    live = LiveMain(tmp_path / "client", 1, server.url, extra=("--exit-with-windows",))
    try:
        [first] = live.wait_windows(1)
        # The OpenWindow command opens the second window in the same host.
        with connect_sync_client(live.data_dir) as client:
            reply = client.request(OpenWindow(), timeout=10)
        assert isinstance(reply, Ok), reply
        assert reply.data == {"host": first.host}
        refs = live.wait_windows(2)
        assert {ref.host for ref in refs} == {first.host}
        # A page's window.close() closes its window as a person would (the window is gone
        # before it can report the script's outcome: the close itself is what is waited for).
        close = "window.close(), true"
        ask_windows(live.data_dir, "evaluate", script=close, windows=(refs[0],), timeout=3)
        live.watch.wait(lambda: refs[0] in live.watch.closed, 15, "the first window closed")
        live.watch.wait(lambda: live.watch.status().windows == 1, 10, "one window counted")
        assert live.running
        assert alive(first.host)
        ask_windows(live.data_dir, "evaluate", script=close, windows=(refs[1],), timeout=3)
        # The last window closed: the host ends, and so does the main process, cleanly.
        assert live.process.wait(20) == 0
        assert not alive(first.host)
    finally:
        live.close()


# ---- no secret reaches the host -------------------------------------------------------

_SYSCALL = re.compile(
    r"^(\d+)\s+(?:(?:read|recvfrom|recvmsg)\(|<\.\.\. (?:read|recvfrom|recvmsg) resumed>)"
)
_QUOTED = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')


def zmq_reads(trace: Path, zmq_threads: set[int]) -> bytes:
    """Every byte the host's ZeroMQ I/O threads read, from an ``strace -f -xx`` log (a
    call another thread interrupted is logged in two lines; its bytes are in the second)."""
    data = bytearray()
    for line in trace.read_text(errors="replace").splitlines():
        match = _SYSCALL.match(line)
        if match and int(match.group(1)) in zmq_threads:
            for quoted in _QUOTED.findall(line):
                data += bytes.fromhex(quoted.replace("\\x", ""))
    return bytes(data)


def zmq_thread_ids(pid: int) -> set[int]:
    threads = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("ZMQbg"):
            threads.add(int(task.name))
    return threads


def test_no_secret_in_any_frame_the_host_receives(server: ServerProcess, tmp_path: Path) -> None:
    live = LiveMain(tmp_path / "client", 1, server.url)
    tracer: subprocess.Popen[bytes] | None = None
    trace = tmp_path / "host.strace"
    try:
        [ref] = live.wait_windows(1)
        live.watch.wait(lambda: live.watch.status().identity == "guest", 30, "a guest")
        host = ref.host
        tracer = subprocess.Popen(
            [
                "strace",
                "-f",
                "-qq",
                "-xx",
                "-s",
                "1000000",
                "-e",
                "trace=read,recvfrom,recvmsg",
                "-o",
                str(trace),
                "-p",
                str(host),
            ],
            stderr=subprocess.PIPE,
        )

        # strace has attached once the traced threads start showing up in its log.
        def attached() -> bool:
            if trace.exists() and trace.stat().st_size > 0:
                return True
            assert tracer.poll() is None, tracer.stderr.read() if tracer.stderr else b""
            return False

        # Polling the trace file: there is no event to wait on.
        wait_until(attached, 20, "strace to attach", interval=0.05)
        # The test types the password through the page's test hook, whose script every
        # subscriber receives: spelt as character codes, so the only copy of the password
        # in a frame could come from the product.
        typed = ",".join(str(ord(char)) for char in PASSWORD)
        script = (
            "(function () {"
            f" document.getElementById('login-identifier').value = {json.dumps(USER)};"
            " document.getElementById('login-password').value ="
            f" String.fromCharCode({typed});"
            " document.getElementById('login-form').requestSubmit();"
            " return true; })()"
        )
        answers = ask_windows(live.data_dir, "evaluate", script=script, windows=(ref,))
        assert answers[0].ok, answers[0].error
        live.watch.wait(
            lambda: live.watch.windows[ref].view.get("identityText") == USER, 20, "signed in"
        )
        tokens = json.loads((live.data_dir / "tokens.json").read_text())
        result = live.command("logout")
        assert result.returncode == 0, result.stderr
        live.watch.wait(
            lambda: live.watch.windows[ref].view.get("identity") == "guest", 20, "signed out"
        )
        threads = zmq_thread_ids(host)
        assert threads, "the host has no ZeroMQ threads to watch"
    finally:
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)  # strace detaches and writes what it has
            tracer.wait(20)
        live.close()
    received = zmq_reads(trace, threads)
    # The recording is real: the host received the user's name and its windows' states...
    assert USER.encode() in received
    assert b"status" in received
    secrets = [PASSWORD, *(v for k, v in tokens.items() if k.endswith("token") and v)]
    assert len(secrets) >= 3  # the password, the access and refresh tokens (and the guest's)
    # ...and never a secret; nor did the host write one to its log file.
    host_log = log_path(live.data_dir, "windows").read_bytes()
    assert f"renderer host {host} for ".encode() in host_log  # the file is this host's
    for secret in secrets:
        assert secret.encode() not in received
        assert secret.encode() not in host_log
