"""The pystray tray handing its AppKit calls to the main thread (macOS), on every platform.

On macOS ``renderer.tray_pystray.PystrayTray`` takes a main-thread poster (PyObjC's
``AppHelper.callAfter`` there) and must make every pystray call that touches AppKit
through it: making the icon and ``run_detached``, showing it, its picture, tooltip and
menu, hiding it; and never ``stop`` (darwin's stops pywebview's ``NSApplication``).
Here the "main thread" is a dedicated thread that runs posted calls in order
(``DedicatedThreadPoster``), and pystray's own ``Icon`` logic runs over a stand-in
backend that, like darwin's, runs detached with no loop of its own and records on which
thread each backend call ran (``ThreadRecordingIcon``). AppKit itself is not called here.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest

from ipc.messages import Shutdown
from tests.support.tray_recorders import (
    Recorder,
    RecordingReporter,
    RecordingSender,
    last_report,
    state_is,
    status,
)

# The backend calls that touch AppKit in pystray's darwin backend.
APPKIT_CALLS = ("make", "run_detached", "show", "hide", "picture", "title", "menu")


class DedicatedThreadPoster:
    """Runs posted calls on a thread of its own, in order: the main thread's run loop
    stand-in. Started late, it is a loop that has not begun running yet."""

    def __init__(self, *, start: bool = True) -> None:
        self._calls: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="main-thread", daemon=True)
        self.posted_from: list[threading.Thread] = []
        if start:
            self.thread.start()

    def __call__(self, call: Callable[[], None]) -> None:
        self.posted_from.append(threading.current_thread())
        self._calls.put(call)

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call()

    def stop(self) -> None:
        self._calls.put(None)
        self.thread.join(5.0)


def thread_recording_icon_class(
    pystray: Any, recorder: Recorder, *, fail_to_make: bool = False
) -> Any:
    """A pystray ``Icon`` whose backend records ``(call, thread)`` instead of drawing."""

    def record(kind: str, value: Any = None) -> None:
        recorder.add(kind, (value, threading.current_thread()))

    class ThreadRecordingIcon(pystray.Icon):  # type: ignore[misc]
        HAS_NOTIFICATION = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            record("make")
            if fail_to_make:
                raise RuntimeError("no status bar")

        def _show(self) -> None:
            record("show")

        def _hide(self) -> None:
            record("hide")

        def _update_icon(self) -> None:
            record("picture", self.icon)
            self._icon_valid = True

        def _update_title(self) -> None:
            record("title", self.title)

        def _update_menu(self) -> None:
            record("menu", [str(item) for item in self.menu] if self.menu else [])

        def _notify(self, message: str, title: str | None = None) -> None:
            record("notify", (title, message))

        def _run(self) -> None:
            record("run")
            raise AssertionError("the main-thread tray runs no loop of its own")

        def _run_detached(self) -> None:
            record("run_detached")
            self._mark_ready()

        def _stop(self) -> None:
            record("stop")

    return ThreadRecordingIcon


@pytest.fixture
def pystray_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    import pystray

    return pystray


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def calls_of(recorder: Recorder, kind: str) -> list[tuple[Any, threading.Thread]]:
    with recorder.changed:
        return [value for call, value in recorder.calls if call == kind]


def make_tray(pystray: Any, recorder: Recorder, poster: DedicatedThreadPoster, **kw: Any) -> Any:
    from renderer.tray_pystray import PystrayTray

    def open_or_raise() -> None:
        with recorder.changed:
            recorder.opened += 1
            recorder.changed.notify_all()

    return PystrayTray(
        host_pid=4242,
        sender=RecordingSender(recorder),
        open_or_raise=open_or_raise,
        reporter=RecordingReporter(recorder),  # type: ignore[arg-type]
        icon_maker=thread_recording_icon_class(pystray, recorder, **kw),
        poster=poster,
    )


def test_every_appkit_call_goes_through_the_poster_and_stop_is_never_called(
    pystray_module: Any, recorder: Recorder
) -> None:
    poster = DedicatedThreadPoster()
    try:
        tray = make_tray(pystray_module, recorder, poster)
        tray.update(status(state="connecting"))
        recorder.wait(lambda: bool(recorder.reports) and recorder.reports[-1].shown, "shown")
        for state in ("connected", "disconnected", "error"):
            tray.update(status(state=state))
            last_report(recorder, state_is(state), f"state {state}")
        tray.update(status(state="connected", authenticated=True, identity="user", username="a"))
        last_report(recorder, lambda r: len(r.menu) == 4, "Sign out in the menu")
        recorder.wait(
            lambda: any("Sign out" in menu for menu, _ in calls_of(recorder, "menu")),
            "the signed-in menu drawn",
        )
        # A menu entry chosen: AppKit calls pystray's handler on the main thread, which
        # redraws the menu there; the command itself goes from a thread of its own.
        icon = tray._icon
        items = {str(item): item for item in icon.menu}
        poster(lambda: items["Quit"](icon))
        recorder.wait(lambda: any(isinstance(c, Shutdown) for c in recorder.commands), "Quit")
        tray.notice("Signed out", "The server refused the session.")
        last_report(recorder, lambda r: r.messages == 1, "the notice counted")
        tray.close()
        recorder.wait(lambda: bool(calls_of(recorder, "hide")), "the icon hidden")
        assert recorder.reports[-1].closed
    finally:
        poster.stop()

    for kind in APPKIT_CALLS:
        ran_on = calls_of(recorder, kind)
        assert ran_on, f"no {kind} call"
        assert all(thread is poster.thread for _, thread in ran_on), kind
    # The last picture, tooltip and menu drawn are the last status's.
    assert calls_of(recorder, "title")[-1][0].startswith("Log monitor: connected")
    assert calls_of(recorder, "menu")[-1][0][-1] == "Quit"
    # The tray never ran a loop of its own nor stopped the application's.
    assert calls_of(recorder, "run") == []
    assert calls_of(recorder, "stop") == []
    # osascript's notification touches no AppKit: the main thread never waits for it.
    [(shown, thread)] = calls_of(recorder, "notify")
    assert shown == ("Signed out", "The server refused the session.")
    assert thread is not poster.thread


def test_posted_before_the_loop_runs_the_icon_is_made_once_it_runs(
    pystray_module: Any, recorder: Recorder
) -> None:
    # The host makes the tray on the main thread before pywebview's loop runs: nothing
    # may touch the icon until the loop runs the posted calls, and nothing may wait.
    poster = DedicatedThreadPoster(start=False)
    tray = make_tray(pystray_module, recorder, poster)
    try:
        tray.update(status(state="connected"))
        last_report(recorder, state_is("connected"), "the status taken")
        assert recorder.calls == []
        assert not tray.showing()
        poster.thread.start()
        recorder.wait(lambda: bool(recorder.reports) and recorder.reports[-1].shown, "shown")
        kinds = [kind for kind, _ in recorder.calls if kind in ("make", "picture", "show")]
        assert kinds[0] == "make"
        # Shown with the first status's picture already set.
        assert kinds.index("picture") < kinds.index("show")
        wanted = tray._pictures["tray-connected"].tobytes()
        assert calls_of(recorder, "picture")[0][0].tobytes() == wanted
    finally:
        tray.close()
        poster.stop()


def test_an_icon_that_cannot_be_made_on_the_main_thread_is_never_shown(
    pystray_module: Any, recorder: Recorder
) -> None:
    poster = DedicatedThreadPoster()
    try:
        tray = make_tray(pystray_module, recorder, poster, fail_to_make=True)
        recorder.wait(lambda: bool(calls_of(recorder, "make")), "the icon tried")
        tray.update(status(state="connected"))
        last_report(recorder, state_is("connected"), "the status taken")
        # The posted changes after the failure find no icon and do nothing.
        done = threading.Event()
        poster(done.set)
        assert done.wait(10.0)
        assert not tray.showing()
        assert [kind for kind, _ in recorder.calls] == ["make"]
        tray.close()
        assert recorder.reports[-1].closed
    finally:
        poster.stop()
