"""Real renderer windows (pywebview, Qt WebEngine, offscreen) driven through demo mode.

Each window is a ``python -m renderer --demo-feed - --report -`` subprocess
(``renderer.demo_driver``): the test writes ipc messages as JSON lines to its stdin and
reads back what the page's DOM shows through ``describe`` requests. Nothing here sleeps
to synchronise: every wait is for a report or for a DOM state, with a deadline.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipc.host_launch import EXIT_MAIN_PROCESS_GONE
from renderer.demo_driver import DemoWindowProcess
from tests.support.demo_window import START_TIMEOUT_S, start_window, status

pytestmark = pytest.mark.timeout(180)

STATE_WORDS = {
    "connected": "Connected to the server",
    "connecting": "Connecting to the server…",
    "disconnected": "Not connected",
    "error": "Connection failed",
}


@pytest.fixture(scope="module")
def window() -> Iterator[DemoWindowProcess]:
    """One window shared by the tests that only change what it shows."""
    with start_window() as shared:
        yield shared


def show(
    window: DemoWindowProcess, message: dict[str, Any], what: str, check: Any
) -> dict[str, Any]:
    window.send(message)
    return window.describe_until(check, 10.0, what)


# ---- status --------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["connecting", "connected", "error", "disconnected"])
def test_each_state_shows_its_words(window: DemoWindowProcess, state: str) -> None:
    # Go through another state first so each case is a real change in the DOM.
    other = "connected" if state != "connected" else "error"
    show(window, status(state=other), other, lambda d: d["state"] == other)
    seen = show(window, status(state=state), state, lambda d: d["state"] == state)
    assert seen["stateText"] == STATE_WORDS[state]
    assert seen["retryShown"] is (state == "disconnected")


def test_disconnected_shows_attempt_and_a_live_countdown(window: DemoWindowProcess) -> None:
    seen = show(
        window,
        status(state="disconnected", attempt=4, nextRetryMs=8000),
        "attempt 4",
        lambda d: d["state"] == "disconnected" and d["attempt"] == 4,
    )
    assert seen["countdownMs"] is not None
    assert 6000 < seen["countdownMs"] <= 8000
    first = seen["countdownMs"]
    assert seen["countdownText"].startswith("Next try in ")
    # Live: the same status, read again later, shows less time left.
    later = window.describe_until(
        lambda d: d["countdownMs"] is not None and d["countdownMs"] <= first - 300,
        5.0,
        "the countdown moving",
    )
    assert later["attempt"] == 4

    gone = show(
        window,
        status(state="connecting", attempt=5),
        "connecting",
        lambda d: d["state"] == "connecting",
    )
    assert gone["retryShown"] is False
    assert gone["countdownMs"] is None


def test_countdown_reaches_now(window: DemoWindowProcess) -> None:
    show(
        window,
        status(state="disconnected", attempt=1, nextRetryMs=300),
        "a short countdown",
        lambda d: d["attempt"] == 1 and d["state"] == "disconnected",
    )
    seen = window.describe_until(lambda d: d["countdownMs"] == 0, 5.0, "the countdown at zero")
    assert seen["countdownText"] == "Trying again now…"


def test_identity_server_client_and_counters(window: DemoWindowProcess) -> None:
    seen = show(
        window,
        status(
            state="connected",
            authenticated=True,
            identity="user",
            username="alice",
            server="http://logs.example:3000",
            clientId="c-42",
            bufferedChunks=3,
            bufferedBytes=2048,
            sentChunks=1500,
            sentBytes=3_000_000,
            deadLettered=2,
            windows=3,
            credentialStore="keychain (SecretService Keyring)",
            game="Star Citizen: LIVE, PTU in /games/<b>StarCitizen</b>",
        ),
        "alice's status",
        lambda d: d["identityText"] == "alice",
    )
    assert seen["identity"] == "user"
    assert seen["credentialStore"] == "keychain (SecretService Keyring)"
    # The game's installs as text (a path holding markup stays characters).
    assert seen["game"] == "Star Citizen: LIVE, PTU in /games/<b>StarCitizen</b>"
    assert window.evaluate("document.querySelectorAll('#game b').length") == 0
    assert seen["server"] == "http://logs.example:3000"
    assert seen["clientId"] == "c-42"
    assert seen["windows"] == 3
    assert seen["counters"] | {"sendRate": None} == {
        "bufferedChunks": 3,
        "bufferedBytes": 2048,
        "sentChunks": 1500,
        "sentBytes": 3_000_000,
        "sendRate": None,
        "deadLettered": 2,
    }
    assert seen["countersText"]["sent"] == "1,500 chunks, 3.0 MB"
    assert seen["signOutShown"] is True
    assert seen["signInShown"] is False

    stats = show(
        window,
        {"type": "stats", "sendRateBytes": 2500.0, "bytesDone": 250, "bytesTotal": 1000},
        "the stats",
        lambda d: d["counters"]["sendRate"] == 2500,
    )
    assert stats["countersText"]["sendRate"].startswith("2.5 kB/s")
    assert stats["backlog"] == pytest.approx(0.25)

    guest = show(
        window,
        status(
            identity="guest",
            authenticated=False,
            lastError="server said no",
            spoolFull=True,
            credentialStore="file",
            game="",
        ),
        "a guest",
        lambda d: d["identity"] == "guest",
    )
    assert guest["identityText"] == "Guest"
    # No game followed: its row is gone; the store as the status says.
    assert guest["game"] == ""
    assert guest["credentialStore"] == "file"
    assert guest["signInShown"] is True
    assert guest["signOutShown"] is False
    assert guest["lastError"] == "Last error: server said no"
    assert guest["spoolFull"] is True


def test_status_change_reaches_the_dom_quickly(window: DemoWindowProcess) -> None:
    latencies = []
    for i, state in enumerate(["error", "connected"] * 4):
        show(
            window,
            status(state="connecting", attempt=i),
            "connecting",
            lambda d: d["state"] == "connecting",
        )
        sent_ms = time.time() * 1000.0
        seen = show(window, status(state=state), state, lambda d, s=state: d["state"] == s)
        latencies.append(seen["stateChangedAt"] - sent_ms)
    print(f"status → DOM latency ms: {sorted(round(x, 1) for x in latencies)}")
    assert statistics.median(latencies) < 200.0


# ---- log text is text --------------------------------------------------------------------

MALICIOUS_LINES = [
    "<script>window.__lmInjected = 'script';</script>",
    "<img src=x onerror=\"window.__lmInjected = 'img'\">",
    '"><svg onload="window.__lmInjected = \'svg\'"></svg>',
    "<iframe srcdoc=\"<script>parent.__lmInjected = 'iframe'</script>\"></iframe>",
    "</li></ol><b id=escaped>bold?</b>",
    "javascript:window.__lmInjected = 'url'",
]


def test_malicious_log_lines_render_literally_and_run_nothing(window: DemoWindowProcess) -> None:
    lines = [{"path": "<b>evil.log</b>", "text": text} for text in MALICIOUS_LINES]
    window.send({"type": "log_lines", "lines": lines})
    window.send(
        {
            "type": "server_event",
            "payload": {"html": "<img src=x onerror=\"window.__lmInjected = 'event'\">"},
        }
    )
    window.describe_until(
        lambda d: d["lastLineText"] == MALICIOUS_LINES[-1], 10.0, "the malicious lines"
    )
    probe = window.evaluate(
        "JSON.stringify({"
        " injected: typeof window.__lmInjected === 'undefined' ? null : window.__lmInjected,"
        " texts: Array.from(document.querySelectorAll('#lines li .text')).slice(-6)"
        "   .map(function (n) { return n.textContent; }),"
        " files: Array.from(document.querySelectorAll('#lines li .file')).slice(-6)"
        "   .map(function (n) { return n.textContent; }),"
        " elements: document.querySelectorAll("
        "   '#lines img, #lines script, #lines svg, #lines iframe, #lines b, #events img').length,"
        " escaped: document.getElementById('escaped') !== null,"
        " event: document.querySelector('#events li:last-child .text').textContent"
        "})"
    )
    seen = json.loads(probe)
    assert seen["texts"] == MALICIOUS_LINES
    assert seen["files"] == ["<b>evil.log</b>"] * len(MALICIOUS_LINES)
    assert seen["elements"] == 0
    assert seen["escaped"] is False
    assert seen["injected"] is None
    assert "<img src=x onerror=" in seen["event"]


# ---- the tail: pause and filters ---------------------------------------------------------


def test_pause_and_filters(window: DemoWindowProcess) -> None:
    def batch(tag: str, n: int) -> dict[str, Any]:
        return {
            "type": "log_lines",
            "lines": [
                {"path": f"/var/log/{'a' if i % 2 else 'b'}.log", "text": f"{tag} {i}"}
                for i in range(n)
            ],
        }

    show(window, batch("before", 10), "the first batch", lambda d: d["lastLineText"] == "before 9")
    window.evaluate("document.getElementById('pause').click(); 0")
    shown = window.describe_until(lambda d: d["paused"], 5.0, "paused")["lines"]
    window.send(batch("while-paused", 5))
    # The page has taken the batch (the bridge pushes it) but shows nothing new.
    window.describe_until(
        lambda d: d["tailCountText"].endswith("5 new lines waiting"), 5.0, "the waiting count"
    )
    assert window.describe()["lines"] == shown
    window.evaluate("document.getElementById('pause').click(); 0")
    resumed = window.describe_until(lambda d: not d["paused"], 5.0, "resumed")
    assert resumed["lastLineText"] == "while-paused 4"

    window.evaluate(
        "var f = document.getElementById('filter-text'); f.value = 'while-paused';"
        " f.dispatchEvent(new Event('input')); 0"
    )
    assert window.describe()["lines"] == 5
    window.evaluate(
        "var s = document.getElementById('filter-file'); s.value = '/var/log/a.log';"
        " s.dispatchEvent(new Event('change')); 0"
    )
    assert window.describe()["lines"] == 2  # "while-paused 1" and "while-paused 3"
    window.evaluate(
        "var f = document.getElementById('filter-text'); f.value = '';"
        " f.dispatchEvent(new Event('input'));"
        "var s = document.getElementById('filter-file'); s.value = '';"
        " s.dispatchEvent(new Event('change')); 0"
    )
    assert window.describe()["lines"] > 5


# ---- actions -------------------------------------------------------------------------------


def test_sign_in_form_sends_once_and_clears_the_password(window: DemoWindowProcess) -> None:
    secret = "correct horse battery staple"
    window.evaluate(
        "document.getElementById('login-identifier').value = 'alice';"
        f"document.getElementById('login-password').value = {json.dumps(secret)};"
        "document.getElementById('login-submit').click(); 0"
    )
    sent = window.wait_for(
        lambda r: r.get("event") == "command" and r["command"].get("type") == "login",
        10.0,
        "the login command",
    )
    assert sent["command"]["identifier"] == "alice"
    assert sent["command"]["passwordLength"] == len(secret)
    seen = window.describe_until(lambda d: d["actionResult"] == "Signed in.", 10.0, "the reply")
    assert seen["passwordFieldEmpty"] is True
    assert all(secret not in line for line in window.raw_output)


def sent_command(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get("event") == "command" and r["command"].get("type") == kind


def test_buttons_send_commands_and_show_failures(window: DemoWindowProcess) -> None:
    for button, command in [
        ("connect", "connect"),
        ("disconnect", "disconnect"),
        ("open-window", "open_window"),
    ]:
        window.evaluate(f"document.getElementById('{button}').click(); 0")
        window.wait_for(sent_command(command), 10.0, f"the {command} command")
    window.send(
        {"type": "fail_next_command", "code": "offline", "message": "The server is unreachable."}
    )
    # The request is handled in order with the feed; a describe round trip proves it landed.
    window.describe()
    window.evaluate("document.getElementById('connect').click(); 0")
    window.describe_until(
        lambda d: d["actionResult"] == "The server is unreachable.", 10.0, "the failure message"
    )


def test_every_control_is_labelled_and_reachable_by_keyboard(window: DemoWindowProcess) -> None:
    unnamed = window.evaluate(
        "JSON.stringify(Array.from(document.querySelectorAll('button, input, select'))"
        ".filter(function (n) { return !n.closest('[hidden]'); })"
        ".filter(function (n) {"
        "  var named = (n.labels && n.labels.length > 0) || n.getAttribute('aria-label')"
        "    || (n.tagName === 'BUTTON' && n.textContent.trim() !== '');"
        "  return !named || n.tabIndex < 0 || n.disabled; })"
        ".map(function (n) { return n.id; }))"
    )
    assert json.loads(unnamed) == []


def test_screenshot_is_a_png_of_the_current_state(
    window: DemoWindowProcess, tmp_path: Path
) -> None:
    pngs = {}
    for state in ("error", "connected"):
        show(window, status(state=state), state, lambda d, s=state: d["state"] == s)
        path = tmp_path / f"{state}.png"
        result = window.request("screenshot", path=str(path))
        assert result == {"path": str(path), "width": 1000, "height": 760}
        pngs[state] = path.read_bytes()
        assert pngs[state].startswith(b"\x89PNG\r\n\x1a\n")
    assert pngs["error"] != pngs["connected"]


# ---- floods, and the main process going away ---------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_flood_of_100k_lines_keeps_the_page_responsive_and_bounded() -> None:
    total, per_batch, seconds = 100_000, 100, 10.0
    with start_window() as window:
        rss_before = _rss_kib(window.pid)
        done = threading.Event()

        def flood() -> None:
            # Load generation: spread the batches evenly over `seconds` like a busy log.
            start = time.monotonic()
            batches = total // per_batch
            for b in range(batches):
                lines = [
                    {
                        "path": f"/var/log/app{b % 3}.log",
                        "text": f"line {b * per_batch + i} " + "x" * 60,
                    }
                    for i in range(per_batch)
                ]
                window.send({"type": "log_lines", "lines": lines})
                lag = start + seconds * (b + 1) / batches - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            done.set()

        writer = threading.Thread(target=flood, daemon=True)
        writer.start()
        round_trips = []
        counts = []
        while not done.wait(0.05):  # sample the page 20 times a second while it floods
            started = time.monotonic()
            seen = window.describe(timeout=10.0)
            round_trips.append((time.monotonic() - started) * 1000.0)
            counts.append(seen["lines"])
        writer.join(5.0)
        final = window.describe_until(
            lambda d: d["lastLineText"] == f"line {total - 1} " + "x" * 60, 15.0, "the last line"
        )
        rss_after = _rss_kib(window.pid)
        print(
            f"describe round trip during the flood: n={len(round_trips)}"
            f" p50={statistics.median(round_trips):.1f} ms max={max(round_trips):.1f} ms;"
            f" pushes={final['window']['pushes']} pushMax={final['window']['pushMaxMs']} ms;"
            f" dropped before the page={final['window']['linesDropped']};"
            f" python RSS {rss_before // 1024} → {rss_after // 1024} MiB"
        )
        assert len(round_trips) >= 10
        assert max(counts) <= 1000
        assert final["lines"] == 1000
        assert statistics.median(round_trips) < 200.0
        assert max(round_trips) < 2000.0
        assert final["window"]["pushes"] <= 31 * (seconds + 15)
        assert rss_after - rss_before < 100 * 1024


def test_window_closes_when_its_feed_ends() -> None:
    with start_window() as window:
        window.end_feed()
        window.wait_event("closing", 10.0)
        assert window.wait_exit(10.0) == EXIT_MAIN_PROCESS_GONE


def test_window_closes_when_the_main_process_dies() -> None:
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with start_window("--main-pid", str(stand_in.pid)) as window:
            stand_in.kill()
            stand_in.wait(10.0)
            killed_at = time.monotonic()
            closing = window.wait_event("closing", 10.0)
            assert str(stand_in.pid) in closing["reason"]
            assert window.wait_exit(10.0) == EXIT_MAIN_PROCESS_GONE
            assert time.monotonic() - killed_at < 5.0
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
            stand_in.wait()


def test_no_display_and_root_environment_is_prepared_for_qt() -> None:
    # The real process, started without DISPLAY and without any Qt variables, must come
    # up on its own (offscreen; --no-sandbox when root) and report what it chose.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT", "DISPLAY", "WAYLAND"))}
    env.pop("QTWEBENGINE_CHROMIUM_FLAGS", None)
    with DemoWindowProcess([], env=env) as window:
        window.send(status())
        started = window.wait_event("started", START_TIMEOUT_S)
        window.wait_event("ready", START_TIMEOUT_S)
        assert started["gui"] == "qt"
        expected = {
            "QT_API": "pyside6",
            "QT_QPA_PLATFORM": "offscreen",
            "QT_QUICK_BACKEND": "software",
        }
        if os.geteuid() == 0:
            expected["QTWEBENGINE_CHROMIUM_FLAGS"] = "--no-sandbox"
        assert started["environment"] == expected
        assert "QtWebEngine" in window.evaluate("navigator.userAgent")
