"""The renderer's decisions without a window: coalescing, the bridge's rate, the page's
policy, the Qt environment, the js_api, the process watch, the Qt binding itself, and
the reporter (what a window tells the main process, and when)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

from PySide6.QtCore import QObject, Signal

from ipc.messages import (
    Command,
    Failed,
    Login,
    LogLine,
    LogLines,
    Ok,
    Reply,
    ReportWindow,
    ServerEvent,
    Stats,
    Status,
    WindowControl,
    WindowState,
)
from renderer.bridge import Bridge
from renderer.coalescer import UpdateCoalescer
from renderer.commands import PageApi
from renderer.environment import choose_gui
from renderer.feed import MainProcessGone
from renderer.page import build_page
from renderer.process_watch import ProcessWatch
from renderer.reporter import WindowReporter

# ---- coalescer -------------------------------------------------------------------------


def lines(start: int, n: int, text: str = "line") -> LogLines:
    return LogLines(
        lines=tuple(LogLine(path="/a.log", text=f"{text} {i}") for i in range(start, start + n))
    )


def test_latest_status_wins_and_nothing_pending_gives_none() -> None:
    c = UpdateCoalescer()
    assert c.take() is None
    c.add(Status(state="connecting", attempt=1))
    c.add(Status(state="disconnected", attempt=2, next_retry_ms=1500))
    script = c.take()
    assert script is not None
    assert script.count("applyStatus") == 1
    assert '"state":"disconnected"' in script
    assert '"nextRetryMs":1500' in script  # the wire's camelCase names reach the page
    assert c.take() is None


def test_lines_are_bounded_and_the_newest_kept() -> None:
    c = UpdateCoalescer(max_lines=1000)
    for b in range(50):
        c.add(lines(b * 100, 100))
    script = c.take()
    assert script is not None
    assert script.count('"text":') == 1000
    assert '"line 4999"' in script
    assert '"line 3999"' not in script
    assert c.counters.lines_dropped == 4000
    assert c.counters.lines_received == 5000


def test_a_huge_line_is_cut_for_display() -> None:
    c = UpdateCoalescer(max_line_chars=100)
    c.add(LogLines(lines=(LogLine(path="/a.log", text="y" * 10_000),)))
    script = c.take()
    assert script is not None
    assert "y" * 100 + "…" in script
    assert "y" * 101 not in script


def test_events_and_stats_are_pushed_with_the_status() -> None:
    c = UpdateCoalescer(max_events=2, wall_clock_ms=lambda: 1234)
    c.add(Stats(send_rate_bytes=10.0))
    for i in range(3):
        c.add(ServerEvent(payload={"n": i}))
    script = c.take()
    assert script is not None
    assert "applyStats" in script
    assert '"sendRateBytes":10.0' in script
    assert '{"at":1234,"payload":{"n":1}}' in script
    assert '"n":0' not in script
    assert c.counters.events_dropped == 1


# ---- bridge --------------------------------------------------------------------------


class ListFeed:
    """Delivers the given messages as fast as asked, then reports the main process gone."""

    def __init__(self, messages: list[Any]) -> None:
        self._messages = list(messages)
        self.closed = False

    def receive(self, timeout: float) -> Any:
        if self._messages:
            return self._messages.pop(0)
        raise MainProcessGone("no more messages")

    def close(self) -> None:
        self.closed = True


class RecordingPage:
    def __init__(self) -> None:
        self.scripts: list[tuple[float, str]] = []
        self._changed = threading.Condition()

    def run_js(self, script: str) -> object:
        with self._changed:
            self.scripts.append((time.monotonic(), script))
            self._changed.notify_all()
        return 0

    def wait_for_text(self, text: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in s for _, s in self.scripts), timeout)


def test_bridge_coalesces_a_flood_and_respects_the_rate() -> None:
    messages: list[Any] = [Status(state="connected", sent_chunks=i) for i in range(2000)]
    messages += [lines(i * 100, 100) for i in range(200)]
    feed = ListFeed(messages)
    page = RecordingPage()
    gone = threading.Event()
    first = threading.Event()
    bridge = Bridge(
        feed, page, lambda reason: gone.set(), on_first_status=first.set, max_rate_hz=30
    )
    bridge.start()
    assert gone.wait(10.0)
    assert first.wait(10.0)
    # The newest status and the newest line are never lost to coalescing.
    assert page.wait_for_text('"line 19999"', 5.0)
    assert page.wait_for_text('"sentChunks":1999', 5.0)
    bridge.stop()
    bridge.join(2.0)
    times = [t for t, _ in page.scripts]
    # 2,200 messages became a handful of pushes, each at least ~1/30 s after the previous.
    assert len(page.scripts) < 20
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1 / 30 - 0.005 for gap in gaps), gaps


# ---- page ------------------------------------------------------------------------------


def test_page_policy_allows_only_its_own_inline_blocks() -> None:
    html = build_page()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy is not None
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert script is not None
    assert style is not None

    def source(text: str) -> str:
        digest = hashlib.sha256(text.encode()).digest()
        return f"'sha256-{base64.b64encode(digest).decode()}'"

    assert f"script-src {source(script.group(1))} 'unsafe-eval'" in policy.group(1)
    assert f"style-src {source(style.group(1))}" in policy.group(1)
    assert "default-src 'none'" in policy.group(1)
    assert "unsafe-inline" not in policy.group(1)
    assert html.count("<script") == 1
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<!--" not in html.replace("<!--CSP-->", "")  # every placeholder was filled


def test_page_writes_log_text_as_text_only() -> None:
    script = re.search(r"<script>(.*?)</script>", build_page(), re.S)
    assert script is not None
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script.group(1)


# ---- environment ----------------------------------------------------------------------


def test_root_without_a_display_gets_offscreen_and_no_sandbox() -> None:
    env: dict[str, str] = {}
    choice = choose_gui(env, platform="linux", euid=0)
    assert choice.gui == "qt"
    assert env == {
        "QT_API": "pyside6",
        "QT_QPA_PLATFORM": "offscreen",
        "QTWEBENGINE_CHROMIUM_FLAGS": "--no-sandbox",
    }
    assert choice.changed == env


def test_user_settings_are_kept_and_non_root_keeps_the_sandbox() -> None:
    env = {"DISPLAY": ":0", "QTWEBENGINE_CHROMIUM_FLAGS": "--disable-gpu", "QT_API": "pyqt6"}
    choose_gui(env, platform="linux", euid=0)
    assert env == {
        "DISPLAY": ":0",
        "QTWEBENGINE_CHROMIUM_FLAGS": "--disable-gpu",
        "QT_API": "pyqt6",
    }
    env = {"WAYLAND_DISPLAY": "wayland-0"}
    choose_gui(env, platform="linux", euid=1000)
    assert env == {"WAYLAND_DISPLAY": "wayland-0", "QT_API": "pyside6"}


def test_forced_offscreen_and_other_platforms() -> None:
    env = {"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}
    choose_gui(env, platform="linux", euid=1000, force_offscreen=True)
    assert env["QT_QPA_PLATFORM"] == "offscreen"
    env = {}
    assert choose_gui(env, platform="win32", euid=0).gui is None
    assert env == {}


# ---- js_api ---------------------------------------------------------------------------


class ScriptedSender:
    def __init__(self, outcome: Reply | BaseException) -> None:
        self.outcome = outcome
        self.sent: list[Command] = []

    def send(self, command: Command, timeout: float) -> Reply:
        self.sent.append(command)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def test_page_api_is_narrow() -> None:
    public = {name for name in dir(PageApi) if not name.startswith("_")}
    assert public == {"connect", "disconnect", "login", "logout", "open_window"}


def test_login_passes_the_password_once_and_never_returns_it() -> None:
    sender = ScriptedSender(Ok())
    api = PageApi(sender, lambda reason: None)
    reply = api.login("  alice ", "hunter2")
    assert reply == {"ok": True, "data": None}
    assert sender.sent == [Login(identifier="alice", password="hunter2")]
    assert "hunter2" not in repr(sender.sent)
    assert api.login(None, "x")["code"] == "invalid"
    assert api.login("alice", "")["code"] == "invalid"
    assert len(sender.sent) == 1


def test_replies_failures_and_a_gone_main_process() -> None:
    failed = PageApi(ScriptedSender(Failed(code="offline", message="No server.")), lambda r: None)
    assert failed.connect() == {"ok": False, "code": "offline", "message": "No server."}
    assert PageApi(ScriptedSender(TimeoutError()), lambda r: None).logout()["code"] == "timeout"
    assert (
        PageApi(ScriptedSender(RuntimeError("bug")), lambda r: None).open_window()["code"]
        == "internal"
    )
    reasons: list[str] = []
    gone = PageApi(ScriptedSender(MainProcessGone("socket closed")), reasons.append)
    assert gone.disconnect()["code"] == "gone"
    assert reasons == ["command channel: socket closed"]


# ---- process watch -----------------------------------------------------------------------


def test_process_watch_reports_an_exit_promptly() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    gone = threading.Event()
    reasons: list[str] = []

    def on_gone(reason: str) -> None:
        reasons.append(reason)
        gone.set()

    watch = ProcessWatch(child.pid, on_gone, poll_interval=0.1)
    watch.start()
    try:
        assert not gone.wait(0.3)  # alive: no report
        child.kill()
        child.wait()
        assert gone.wait(2.0)
        assert reasons == [f"process {child.pid} exited"]
    finally:
        watch.stop()
        if child.poll() is None:
            child.kill()
            child.wait()


# ---- the Qt binding ---------------------------------------------------------------------


# PySide6 releases whose Signal.emit() returns True without a reference of its own, so
# every emit takes one of True's references away (measured: 6.12.0 loses one per emit on
# Python 3.11; 6.11.3 none). The wheels are abi3: the same binary on every Python.
EMIT_LOSES_TRUE = frozenset({"6.12.0"})
# Few enough that the references 6.12.0 loses cannot reach zero and abort the test run.
EMITS = 100


def test_qt_signal_emit_keeps_reference_counts() -> None:
    """Every object an emit touches keeps its references: its result (True), the
    arguments (mortal objects), the emitter and the slot, with and without a receiver.

    With PySide6 6.12.0, Python 3.11 aborts ("bool_dealloc: deallocating True") after a
    few thousand emits, which is every evaluate_js and every cross-thread call a window
    makes. From Python 3.12 on True is immortal: its count never moves, so the loss is
    harmless there and no count can show it; the next test names the release instead."""

    class Emitter(QObject):
        one = Signal(object)
        two = Signal(object, object)

    calls: list[int] = []

    def slot(first: object, second: object) -> None:
        calls.append(1)

    emitter = Emitter()
    emitter.two.connect(slot)
    argument, other = object(), ["a", "list"]
    watched: dict[str, object] = {
        "True": True,
        "False": False,
        "argument": argument,
        "other": other,
        "emitter": emitter,
        "slot": slot,
    }
    emitter.one.emit(argument)  # a first emit may cache what later ones reuse
    emitter.two.emit(argument, other)
    before = {name: sys.getrefcount(value) for name, value in watched.items()}
    for _ in range(EMITS):
        emitter.one.emit(argument)
        emitter.two.emit(argument, other)
    after = {name: sys.getrefcount(value) for name, value in watched.items()}
    assert len(calls) == EMITS + 1
    assert {name: after[name] - before[name] for name in watched} == dict.fromkeys(watched, 0)


def test_pyside6_is_not_a_release_whose_emit_loses_references() -> None:
    """On Python 3.12+ the lost references above cannot be counted, so the release is
    what tells there (the dependency bound in pyproject.toml keeps it out as well)."""
    import PySide6

    assert PySide6.__version__ not in EMIT_LOSES_TRUE, (
        f"PySide6 {PySide6.__version__}: Signal.emit() loses a reference to True per call"
    )


# ---- reporter ----------------------------------------------------------------------------


class FakeInspectable:
    """A page whose readback the test sets; counts readbacks and screenshots."""

    def __init__(self) -> None:
        self.page: dict[str, Any] = {"hasStatus": True, "state": "connected", "countdownMs": None}
        self.describes = 0
        self.shots: list[str] = []

    def wait_ready(self, timeout: float) -> bool:
        return True

    def describe(self, timeout: float = 10.0) -> dict[str, Any]:
        self.describes += 1
        return {**self.page, "window": {"loadedMs": 400.0, "firstStatusMs": 420.0}}

    def evaluate(self, script: str, timeout: float = 10.0) -> object:
        return {"ran": script}

    def take_screenshot(self, path: Any, timeout: float = 10.0) -> dict[str, Any]:
        self.shots.append(str(path))
        return {"path": str(path), "width": 10, "height": 10}


class ReportSink:
    """A sender that keeps every ReportWindow's state, for waiting on with a deadline."""

    def __init__(self) -> None:
        self.states: list[WindowState] = []
        self.changed = threading.Condition()

    def send(self, command: Command, timeout: float) -> Reply:
        assert isinstance(command, ReportWindow)
        with self.changed:
            self.states.append(command.state)
            self.changed.notify_all()
        return Ok()

    def wait(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.states) >= count, timeout), self.states
            return [json.loads(s.view) for s in self.states]


def start_reporter(
    hooks: bool = False, rate: float = 2.0
) -> tuple[WindowReporter, FakeInspectable, ReportSink]:
    sink = ReportSink()
    page = FakeInspectable()
    reporter = WindowReporter(sink, title="t", max_rate_hz=rate, hooks_enabled=hooks)
    reporter.attach(page)
    return reporter, page, sink


def test_reporter_reports_lifecycle_and_only_real_changes_at_a_bounded_rate() -> None:
    reporter, page, sink = start_reporter(rate=10.0)
    try:
        reporter.on_event("loaded", {})
        assert sink.wait(1)[0]["state"] == "connected"
        assert sink.states[0].ready is False
        reporter.on_event("ready", {})
        sink.wait(2)
        assert sink.states[1].ready is True
        # A page that moves only its countdown has nothing new to report...
        for ms in range(5):
            page.page["countdownMs"] = ms
            reporter.page_changed()
        deadline = time.monotonic() + 5.0
        while page.describes < 3:
            assert time.monotonic() < deadline, "the page was not read back"
            time.sleep(0.01)
        assert len(sink.states) == 2
        # ...while a real change is reported, however many pushes came in between.
        started = time.monotonic()
        for i in range(40):
            page.page["state"] = "disconnected" if i % 2 else "connecting"
            reporter.page_changed()
            time.sleep(0.01)  # pushes arriving over 0.4 s, as the bridge would make them
        views = sink.wait(3)
        elapsed = time.monotonic() - started
        assert views[-1]["state"] in ("connecting", "disconnected")
        assert len(sink.states) - 2 <= elapsed * 10 + 2  # at most ~10/s
    finally:
        reporter.stop()
    reporter.report_closed()
    assert sink.states[-1].closed is True


def test_reporter_answers_controls_and_keeps_the_evaluate_hook_closed_by_default(
    tmp_path: Any,
) -> None:
    reporter, page, sink = start_reporter(hooks=False)
    try:
        reporter.control(WindowControl(request="r1", action="screenshot", directory=str(tmp_path)))
        shot = sink.wait(1)[-1]["control"]
        assert shot["id"] == "r1"
        assert shot["ok"] is True
        assert page.shots == [str(tmp_path / f"window-{os.getpid()}.png")]
        reporter.control(WindowControl(request="r2", action="evaluate", script="1 + 1"))
        refused = sink.wait(2)[-1]["control"]
        assert refused["id"] == "r2"
        assert refused["ok"] is False
        assert "PermissionError" in refused["error"]
    finally:
        reporter.stop()
    reporter, page, sink = start_reporter(hooks=True)
    try:
        reporter.control(WindowControl(request="r3", action="evaluate", script="1 + 1"))
        ran = sink.wait(1)[-1]["control"]
        assert ran == {"id": "r3", "action": "evaluate", "result": {"ran": "1 + 1"}, "ok": True}
    finally:
        reporter.stop()
