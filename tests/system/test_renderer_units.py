"""The renderer's decisions without a window: coalescing, the bridge's rate, the page's
policy, the Qt environment, the js_api, the process watch, the Qt binding itself, and
the reporter (what a window tells the main process, and when)."""

from __future__ import annotations

import gc
import itertools
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from harness.waiting import wait_until
from ipc.host_launch import format_geometry, parse_geometry
from ipc.messages import (
    Command,
    ControlOutcome,
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
    WindowGeometry,
    WindowState,
    WindowView,
)
from renderer.bridge import Bridge, PageUnavailable, PushDone, PushScheduler
from renderer.coalescer import UpdateCoalescer
from renderer.commands import PageApi
from renderer.environment import choose_gui
from renderer.feed import MainProcessGone
from renderer.page import CONTENT_SECURITY_POLICY, is_page_resource, page_url, read_static
from renderer.process_watch import ProcessWatch
from renderer.qt_collector import due_generation
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


def test_a_state_the_page_already_shows_is_not_pushed_again() -> None:
    c = UpdateCoalescer()
    c.add(Status(state="connected", sent_chunks=1))
    c.add(Stats(send_rate_bytes=0.0))
    assert c.take() is not None
    # The main process republishes unchanged stats every second: nothing to push.
    c.add(Stats(send_rate_bytes=0.0))
    c.add(Status(state="connected", sent_chunks=1))
    assert not c.pending
    assert c.take() is None
    # A change is pushed, and so is a return to the shown value after a pending change.
    c.add(Stats(send_rate_bytes=9.0))
    c.add(Stats(send_rate_bytes=0.0))
    script = c.take()
    assert script is not None
    assert '"sendRateBytes":0.0' in script


def test_replay_gives_a_fresh_page_everything_the_old_one_was_given() -> None:
    c = UpdateCoalescer(max_lines=5, max_events=2, wall_clock_ms=lambda: 7)
    c.add(Status(state="connected", sent_chunks=1))
    c.add(Stats(send_rate_bytes=5.0))
    c.add(lines(0, 3))
    c.add(ServerEvent(payload={"n": 1}))
    assert c.take() is not None
    c.add(Status(state="connected", sent_chunks=2))
    c.add(lines(3, 4))
    assert c.take() is not None
    c.add(lines(7, 1))  # arrived after the page died, not yet taken
    c.replay()
    script = c.take()
    assert script is not None
    # The newest status (not the first), the stats, the last five lines in order, the
    # event: the whole present, once.
    assert '"sentChunks":2' in script
    assert '"sentChunks":1' not in script
    assert '"sendRateBytes":5.0' in script
    shown = re.findall(r'"line (\d+)"', script)
    assert shown == ["3", "4", "5", "6", "7"]
    assert '"payload":{"n":1}' in script
    c.replay()  # and again: replay after replay gives the same page
    again = c.take()
    assert again is not None
    assert re.findall(r'"line (\d+)"', again) == ["3", "4", "5", "6", "7"]


# ---- bridge --------------------------------------------------------------------------


class RecordingPage:
    """A page that runs each pushed script at once (on the scheduler's thread)."""

    def __init__(self) -> None:
        self.scripts: list[tuple[float, str]] = []
        self._changed = threading.Condition()

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]:
        def run() -> None:
            with self._changed:
                self.scripts.append((time.monotonic(), script))
                self._changed.notify_all()
            done(None)

        return run

    def wait_for_text(self, text: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in s for _, s in self.scripts), timeout)


def test_bridge_coalesces_a_flood_and_respects_the_rate() -> None:
    messages: list[Any] = [Status(state="connected", sent_chunks=i) for i in range(2000)]
    messages += [lines(i * 100, 100) for i in range(200)]
    page = RecordingPage()
    first = threading.Event()
    scheduler = PushScheduler()
    bridge = Bridge(page, scheduler, on_status_shown=first.set, max_rate_hz=30)
    bridge.start()
    offered = time.monotonic()
    for message in messages:  # as fast as a source delivers; offer never waits for the page
        bridge.offer(message)
    assert time.monotonic() - offered < 2.0
    assert first.wait(10.0)
    # The newest status and the newest line are never lost to coalescing.
    assert page.wait_for_text('"line 19999"', 5.0)
    assert page.wait_for_text('"sentChunks":1999', 5.0)
    bridge.stop()
    scheduler.stop()
    times = [t for t, _ in page.scripts]
    # 2,200 messages became a handful of pushes, each at least ~1/30 s after the previous.
    assert len(page.scripts) < 20
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1 / 30 - 0.005 for gap in gaps), gaps


class StuckPage(RecordingPage):
    """A page that takes scripts and never says it ran them (a hung render process)."""

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]:
        return super().prepare_js(script, lambda error: None)


def test_one_scheduler_pushes_every_window_together_and_a_stuck_page_holds_only_itself() -> None:
    posts: list[float] = []

    def poster(job: Callable[[], None]) -> None:
        posts.append(time.monotonic())
        job()

    scheduler = PushScheduler(lambda: poster)
    pages = [RecordingPage(), RecordingPage(), StuckPage()]
    bridges = [Bridge(page, scheduler, max_rate_hz=100) for page in pages]
    try:
        for bridge in bridges:
            bridge.start()
        with scheduler.lock:  # offered together, as a subscription delivers to every window
            for bridge in bridges:
                bridge.offer(Status(state="connected", attempt=1))
        for page in pages:
            assert page.wait_for_text('"attempt":1', 5)
        assert len(posts) == 1  # three windows' updates, one job for the GUI thread
        # The stuck page has one update in flight; the others go on taking theirs.
        for attempt in range(2, 6):
            with scheduler.lock:
                for bridge in bridges:
                    bridge.offer(Status(state="connected", attempt=attempt))
            assert pages[0].wait_for_text(f'"attempt":{attempt}', 5)
            assert pages[1].wait_for_text(f'"attempt":{attempt}', 5)
        assert len(pages[2].scripts) == 1
        assert len(posts) == 5
    finally:
        for bridge in bridges:
            bridge.stop()
        scheduler.stop()


class DyingPage(RecordingPage):
    """A page whose render process dies on the first push after ``die()``."""

    def __init__(self) -> None:
        super().__init__()
        self.dead = False

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]:
        if self.dead:
            raise PageUnavailable("the page's render process has ended")
        return super().prepare_js(script, done)


def test_a_paused_bridge_repaints_a_reloaded_page_with_the_present() -> None:
    page = DyingPage()
    shown = threading.Semaphore(0)
    scheduler = PushScheduler()
    bridge = Bridge(page, scheduler, on_status_shown=shown.release)
    bridge.start()
    try:
        bridge.offer(Status(state="connected", sent_chunks=1))
        bridge.offer(lines(0, 2))
        assert shown.acquire(timeout=5)
        assert page.wait_for_text('"line 1"', 5)
        # The render process dies: pushes fail, the window pauses the bridge.
        page.dead = True
        bridge.offer(Status(state="disconnected", attempt=3))
        bridge.pause()
        bridge.offer(lines(2, 1))
        page.dead = False
        before = len(page.scripts)
        bridge.resume(replay=True)
        assert shown.acquire(timeout=5)  # the status is "shown" again, on the new page
        assert page.wait_for_text('"line 2"', 5)
        repaint = "".join(script for _, script in page.scripts[before:])
        # The new page gets the present status and every line, the old ones first.
        assert '"state":"disconnected"' in repaint
        assert re.findall(r'"line (\d+)"', repaint) == ["0", "1", "2"]
    finally:
        bridge.stop()
        scheduler.stop()


# ---- page ------------------------------------------------------------------------------


def test_page_policy_is_self_only_with_no_inline_script_or_style() -> None:
    html = read_static("index.html")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy is not None
    assert policy.group(1) == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in policy.group(1).split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self' 'unsafe-eval'"  # pywebview's js_api needs eval
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'none'"
    assert "unsafe-inline" not in policy.group(1)
    assert not re.search(r"https?:|//", policy.group(1))  # no remote origin at all
    # No inline script, style or handler: everything comes from the package's files.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="app.js" defer>']
    assert "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)


def test_a_page_may_load_its_own_files_and_nothing_else() -> None:
    assert page_url().startswith("file:///")
    assert is_page_resource(page_url())
    assert is_page_resource(page_url().replace("index.html", "app.js"))
    assert is_page_resource("qrc:///qtwebchannel/qwebchannel.js")
    outside = [
        page_url().replace("index.html", "../page.py"),
        page_url().replace("index.html", "missing.js"),
        "file:///etc/passwd",
        "file://otherhost" + page_url().removeprefix("file://"),
        "https://cdn.example.com/app.js",
        "http://127.0.0.1:9/x",
        "data:text/javascript,alert(1)",
        "ws://127.0.0.1:1/",
    ]
    assert [url for url in outside if is_page_resource(url)] == []


def test_page_writes_log_text_as_text_only() -> None:
    script = read_static("app.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


# ---- environment ----------------------------------------------------------------------


def test_root_without_a_display_gets_offscreen_and_no_sandbox() -> None:
    env: dict[str, str] = {}
    choice = choose_gui(env, platform="linux", euid=0)
    assert choice.gui == "qt"
    assert env == {
        "QT_API": "pyside6",
        "QT_QPA_PLATFORM": "offscreen",
        "QT_QUICK_BACKEND": "software",
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
    assert env["QT_QUICK_BACKEND"] == "software"
    env = {"QT_QPA_PLATFORM": "offscreen", "QT_QUICK_BACKEND": "rhi"}
    choose_gui(env, platform="linux", euid=1000)
    assert env["QT_QUICK_BACKEND"] == "rhi"  # the user's choice stays
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


def test_a_window_geometry_goes_to_a_restarted_host_and_back() -> None:
    for geometry in (
        WindowGeometry(x=40, y=30, width=1100, height=800),
        WindowGeometry(x=-148, y=-14, width=480, height=360),
    ):
        assert parse_geometry(format_geometry(geometry)) == geometry
    assert format_geometry(WindowGeometry(x=-5, y=7, width=10, height=20)) == "10x20-5+7"
    for bad in ("1100x800", "1100x800+1", "x+1+1", "10x20+a+1", ""):
        assert parse_geometry(bad) is None


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
    # No collection while counting: garbage of earlier tests freed meanwhile would take
    # references to True and False with it (seen: -5 and -1 in a full run).
    gc.collect()
    gc.disable()
    try:
        before = {name: sys.getrefcount(value) for name, value in watched.items()}
        for _ in range(EMITS):
            emitter.one.emit(argument)
            emitter.two.emit(argument, other)
        after = {name: sys.getrefcount(value) for name, value in watched.items()}
    finally:
        gc.enable()
    assert len(calls) == EMITS + 1
    assert {name: after[name] - before[name] for name in watched} == dict.fromkeys(watched, 0)


def test_pyside6_is_not_a_release_whose_emit_loses_references() -> None:
    """On Python 3.12+ the lost references above cannot be counted, so the release is
    what tells there (the dependency bound in pyproject.toml keeps it out as well)."""
    import PySide6

    assert PySide6.__version__ not in EMIT_LOSES_TRUE, (
        f"PySide6 {PySide6.__version__}: Signal.emit() loses a reference to True per call"
    )


# ---- garbage collection on the GUI thread ------------------------------------------------

# Builds reference cycles in a thread of its own, as pywebview's JavaScript threads do, and
# says on which threads they were freed. ``--collector`` runs the host's collector.
CYCLES_FREED_WHERE = """
import gc, sys, threading
from PySide6.QtCore import QCoreApplication, QTimer
app = QCoreApplication([])
collector = None
if "--collector" in sys.argv:
    from renderer.qt_collector import GuiThreadCollector
    collector = GuiThreadCollector(every_ms=20)
CYCLES = 3000
freed = []
class Cycle:
    def __init__(self):
        self.itself = self
    def __del__(self):
        freed.append(threading.current_thread().name)
def build():
    for _ in range(CYCLES):
        Cycle()
worker = threading.Thread(target=build, name="worker")
worker.start()
worker.join()
def check():
    if len(freed) == CYCLES or "--collector" not in sys.argv:
        app.quit()
timer = QTimer()
timer.timeout.connect(check)
timer.start(10)
QTimer.singleShot(20_000, app.quit)  # the deadline: the test then sees what was not freed
app.exec()
print(len(freed), freed.count("MainThread"), freed.count("worker"), gc.isenabled())
"""


def cycles_freed_where(*arguments: str) -> tuple[int, int, int, str]:
    done = subprocess.run(
        [sys.executable, "-c", CYCLES_FREED_WHERE, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    total, on_main, on_worker, enabled = done.stdout.split()
    return int(total), int(on_main), int(on_worker), enabled


def test_cycles_are_collected_on_the_gui_thread_only() -> None:
    """A closed window's Qt objects sit in reference cycles; Qt WebEngine aborts the host
    when they are destroyed off the GUI thread. CPython collects on whichever thread
    crosses its threshold (the control: cycles built in a worker are freed there); with
    the collector, every one is freed on the GUI thread, and none is left behind."""
    total, _on_main, on_worker, enabled = cycles_freed_where()
    assert enabled == "True"
    assert on_worker > 0, (total, on_worker)
    assert cycles_freed_where("--collector") == (3000, 3000, 0, "False")


def test_the_collector_collects_the_generation_cpython_would() -> None:
    thresholds = (700, 10, 10)
    assert due_generation((5, 0, 0), thresholds) is None
    assert due_generation((701, 3, 0), thresholds) == 0
    assert due_generation((701, 11, 2), thresholds) == 1
    assert due_generation((30, 4, 11), thresholds) == 2
    assert due_generation((701, 11, 11), (700, 10, 0)) == 1  # a threshold of 0: never


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
        window = {"loadedMs": 400.0, "firstStatusMs": 420.0, "renderProcess": 77, "reloads": 0}
        return {**self.page, "countersText": {"sent": "1 chunk"}, "window": window}

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

    def wait(self, count: int, timeout: float = 5.0) -> list[WindowView]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.states) >= count, timeout), self.states
            views = [s.view for s in self.states]
        assert all(view is not None for view in views)
        return [view for view in views if view is not None]


def start_reporter(
    hooks: bool = False, rate: float = 2.0
) -> tuple[WindowReporter, FakeInspectable, ReportSink]:
    sink = ReportSink()
    page = FakeInspectable()
    reporter = WindowReporter(
        sink, window=2, title="t", host=4321, max_rate_hz=rate, hooks_enabled=hooks
    )
    reporter.attach(page)
    return reporter, page, sink


def test_reporter_reports_lifecycle_and_only_real_changes_at_a_bounded_rate() -> None:
    reporter, page, sink = start_reporter(rate=10.0)
    try:
        reporter.on_event("loaded", {})
        first = sink.wait(1)[0]
        assert first.state == "connected"
        assert first.timings.first_status_ms == 420.0
        assert first.render_process == 77
        assert (sink.states[0].host, sink.states[0].window) == (4321, 2)
        assert sink.states[0].ready is False
        reporter.on_event("ready", {})
        sink.wait(2)
        assert sink.states[1].ready is True
        # A page that moves only its countdown has nothing new to report...
        for ms in range(5):
            page.page["countdownMs"] = ms
            reporter.page_changed()
        wait_until(lambda: page.describes >= 3, 5.0, "the page read back", interval=0.01)
        assert len(sink.states) == 2
        # ...while a real change is reported, however many pushes came in between.
        started = time.monotonic()
        for i in range(40):
            page.page["state"] = "disconnected" if i % 2 else "connecting"
            reporter.page_changed()
            time.sleep(0.01)  # pushes arriving over 0.4 s, as the bridge would make them
        views = sink.wait(3)
        elapsed = time.monotonic() - started
        assert views[-1].state in ("connecting", "disconnected")
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
        shot = sink.wait(1)[-1].control
        assert shot is not None
        assert shot.id == "r1"
        assert shot.ok is True
        assert page.shots == [str(tmp_path / "window-4321-2.png")]
        reporter.control(WindowControl(request="r2", action="evaluate", script="1 + 1"))
        refused = sink.wait(2)[-1].control
        assert refused is not None
        assert refused.id == "r2"
        assert refused.ok is False
        assert refused.error is not None
        assert "PermissionError" in refused.error
    finally:
        reporter.stop()
    reporter, page, sink = start_reporter(hooks=True)
    try:
        reporter.control(WindowControl(request="r3", action="evaluate", script="1 + 1"))
        ran = sink.wait(1)[-1].control
        assert ran == ControlOutcome(
            id="r3", action="evaluate", ok=True, result={"ran": "1 + 1"}, error=None
        )
    finally:
        reporter.stop()
