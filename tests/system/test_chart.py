"""The shipping chart: the main process's ring of per-second samples, the page's SVG, and a
window opened late that draws the history at once.

The recorder and the coalescer are plain units; the page is a real window in demo mode
(``renderer.demo_driver``) fed a history, read back from its DOM
(``window.lm.describe().chart``); the last test runs the real main process with the demo
log against the real server, waits for a few seconds of history, then opens a window
and checks its first painted chart already holds them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.server_process import ServerProcess
from ipc.host import connect_subscriber_thread
from ipc.messages import TOPIC_HISTORY, HistorySample, ShippingHistory, Status
from ipc.subscriber import Delivery
from main_process.shipping_history import HISTORY_SECONDS, ShippingRecorder
from renderer.coalescer import UpdateCoalescer
from renderer.demo_driver import DemoWindowProcess
from tests.support.demo_window import start_window
from tests.support.live_main import START_TIMEOUT_S, LiveMain

pytestmark = pytest.mark.timeout(240)

NOW_MS = 1_800_000_000_000


# ---- the recorder ------------------------------------------------------------------------


def test_the_recorder_keeps_per_second_rates_for_ten_minutes_at_most() -> None:
    recorder = ShippingRecorder()
    recorder.record(100.0, NOW_MS, sent_bytes=1000, buffered_chunks=3)
    assert len(recorder) == 0  # the first call only sets where counting starts
    recorder.record(101.0, NOW_MS + 1000, sent_bytes=5000, buffered_chunks=2)
    recorder.record(103.0, NOW_MS + 3000, sent_bytes=7000, buffered_chunks=0)
    assert recorder.history().samples == (
        HistorySample(at_ms=NOW_MS + 1000, sent_bytes_per_s=4000.0, buffered_chunks=2),
        HistorySample(at_ms=NOW_MS + 3000, sent_bytes_per_s=1000.0, buffered_chunks=0),
    )
    # A total that went down (a new spool) is nothing shipped, not a negative rate.
    recorder.record(104.0, NOW_MS + 4000, sent_bytes=10, buffered_chunks=1)
    assert recorder.history().samples[-1].sent_bytes_per_s == 0.0
    for second in range(2 * HISTORY_SECONDS):
        recorder.record(105.0 + second, NOW_MS + 5000 + second * 1000, second * 100, second)
    history = recorder.history()
    assert len(history.samples) == HISTORY_SECONDS
    assert history.interval_ms == 1000
    assert history.samples[-1].buffered_chunks == 2 * HISTORY_SECONDS - 1
    assert all(sample.sent_bytes_per_s == 100.0 for sample in history.samples)


def test_the_coalescer_pushes_the_latest_history_once_and_replays_it() -> None:
    coalescer = UpdateCoalescer()
    old = ShippingHistory(samples=(HistorySample(NOW_MS, 1.0, 1),))
    new = ShippingHistory(
        samples=(HistorySample(NOW_MS, 1.0, 1), HistorySample(NOW_MS + 1, 2.0, 0))
    )
    coalescer.add(old)
    coalescer.add(new)
    script = coalescer.take()
    assert script is not None
    assert script.count("lm.applyHistory(") == 1
    assert f"[{NOW_MS + 1},2.0,0]" in script  # samples travel as arrays
    coalescer.add(new)  # the same history again: nothing to push
    assert coalescer.take() is None
    coalescer.replay()  # a reloaded page is given it again
    replayed = coalescer.take()
    assert replayed is not None
    assert "lm.applyHistory(" in replayed


# ---- the page ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def window() -> Iterator[DemoWindowProcess]:
    with start_window() as shared:
        yield shared


def history(samples: list[tuple[int, float, int]]) -> dict[str, Any]:
    return {"type": "shipping_history", "intervalMs": 1000, "samples": [list(s) for s in samples]}


def test_the_page_draws_both_lines_and_says_their_peaks(window: DemoWindowProcess) -> None:
    end = NOW_MS
    samples = [(end - (299 - i) * 1000, 1000.0 * (i % 60), i % 7) for i in range(300)]
    # One sample older than ten minutes before the newest: not drawn.
    samples.insert(0, (end - 11 * 60 * 1000, 9e9, 999))
    window.send(history(samples))
    chart = window.describe_until(lambda d: d["chart"]["samples"] == 300, 10.0, "the chart drawn")[
        "chart"
    ]
    assert chart["ratePoints"] == chart["waitingPoints"] == 300
    assert chart["spanMs"] == 299_000
    assert chart["peakRate"] == 59_000.0
    assert chart["lastRate"] == 59_000.0
    assert chart["peakWaiting"] == 6
    assert chart["lastWaiting"] == 299 % 7
    assert chart["text"] == (
        "Over the last 5 min: sent up to 59 kB/s, now 59 kB/s; chunks waiting up to 6, now 5."
    )
    path = window.evaluate("document.getElementById('chart-rate').getAttribute('d')")
    assert isinstance(path, str)
    assert path.count("L") == 299
    # 299 s of 600 s: the line starts near the middle, at the bottom (nothing sent then).
    assert path.startswith("M301.0 78.0L302.0")


def test_a_malformed_history_leaves_the_chart_as_it_was(window: DemoWindowProcess) -> None:
    window.send(history([(NOW_MS, 5.0, 1), (NOW_MS + 1000, 7.0, 2)]))
    window.describe_until(lambda d: d["chart"]["samples"] == 2, 10.0, "two samples")
    window.send({"type": "shipping_history", "intervalMs": 1000, "samples": [["x", 1, 2]]})
    window.send({"type": "status", "state": "error", "server": "s", "clientId": "c"})
    seen = window.describe_until(lambda d: d["state"] == "error", 10.0, "the next status")
    assert seen["chart"]["samples"] == 2


# ---- a window opened late ------------------------------------------------------------------


def test_a_window_opened_late_draws_the_history_at_its_first_paint(
    server: ServerProcess, tmp_path: Path
) -> None:
    wanted = 8
    main = LiveMain(tmp_path / "client", 0, server.url)  # offscreen: no window, no tray
    seen: list[ShippingHistory] = []
    enough = threading.Event()

    def on_history(delivery: Delivery) -> None:
        if isinstance(delivery.message, ShippingHistory):
            seen.append(delivery.message)
            busy = [s for s in delivery.message.samples if s.sent_bytes_per_s > 0]
            if len(delivery.message.samples) >= wanted and busy:
                enough.set()

    subscriber = connect_subscriber_thread(main.data_dir, on_history, (TOPIC_HISTORY,)).start()
    try:
        assert enough.wait(60), f"no {wanted} s of history with shipping: {seen[-1:]}"
        assert main.watch.status().windows == 0
        before = set(main.watch.windows)
        second = main.command("run")  # a second instance asks the first for a window
        assert second.returncode == 0, second.stderr
        main.watch.wait(
            lambda: any(
                s.first_with_status is not None
                for r, s in main.watch.windows.items()
                if r not in before
            ),
            START_TIMEOUT_S,
            "the late window's first painted status",
        )
        first = next(s.first_with_status for r, s in main.watch.windows.items() if r not in before)
        assert first is not None
        chart = first["chart"]
        # Its first paint already holds the seconds shipped before it opened.
        assert chart["samples"] >= wanted, chart
        assert chart["peakRate"] > 0, chart
        assert chart["ratePoints"] == chart["samples"]
        status: Status = main.watch.status()
        assert status.sent_bytes > 0
    finally:
        subscriber.stop()
        main.close()
