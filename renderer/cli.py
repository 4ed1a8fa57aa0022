"""``python -m renderer``: parse the options, prepare Qt, open one window, exit.

Two modes end in the same ``RendererWindow``:

* ``--data-dir D`` (what the main process spawns): the feed and the command sender come
  from ``ipc`` (``renderer.ipc_link``), the window reports its state to the main process
  (``renderer.reporter``), and it closes when the main process is gone: its pid exits
  (``--main-pid``, else the pid in the data dir's instance lock) or its heartbeat stops.
* ``--demo-feed FILE`` (tests, trying the UI): JSON lines in, reports out
  (``renderer.demo``).

Must not: import pywebview before ``renderer.environment.prepare`` has run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import IO

EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m renderer",
        description="Open one log-monitor window.",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the data dir of the running main process to show (what it spawns windows with)",
    )
    parser.add_argument(
        "--demo-feed",
        metavar="FILE",
        help="read published messages and requests as JSON lines from FILE ('-': stdin)",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        default="-",
        help="with --demo-feed: write events and replies as JSON lines to FILE ('-': stdout)",
    )
    parser.add_argument(
        "--main-pid",
        type=int,
        metavar="PID",
        help="close the window when this process exits",
    )
    parser.add_argument("--title", default="Log monitor", help="window title")
    parser.add_argument(
        "--size",
        default="1100x800",
        metavar="WxH",
        help="initial window size in pixels (default 1100x800)",
    )
    parser.add_argument(
        "--offscreen",
        action="store_true",
        help="render without a display (Qt's offscreen platform; Linux only)",
    )
    parser.add_argument("--verbose", action="store_true", help="log debugging details")
    return parser


def _parse_size(text: str) -> tuple[int, int] | None:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        return None
    return int(width), int(height)


def _open(name: str, mode: str) -> IO[str]:
    if name == "-":
        return sys.stdin if "r" in mode else sys.stdout
    return open(name, mode, encoding="utf-8", buffering=1)


def main(argv: list[str] | None = None, started_at: float | None = None) -> int:
    started_at = time.monotonic() if started_at is None else started_at
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="renderer %(process)d %(levelname)s %(name)s: %(message)s",
    )
    size = _parse_size(args.size)
    if size is None:
        print(f"renderer: --size must look like 1100x800, not {args.size!r}.", file=sys.stderr)
        return EXIT_USAGE
    if (args.demo_feed is None) == (args.data_dir is None):
        print(
            "renderer: pass exactly one update source: --data-dir DIR or --demo-feed FILE.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.data_dir is not None:
        return _run_with_main_process(args, size, started_at)

    from renderer import environment

    choice = environment.prepare(force_offscreen=args.offscreen)

    # Imported only now: pywebview and Qt read the environment prepared above.
    from renderer.demo import DemoCommandSender, DemoFeed, Diagnostics, ReportWriter
    from renderer.process_watch import ProcessWatch
    from renderer.window import RendererWindow

    try:
        feed_stream = _open(args.demo_feed, "r")
        report = ReportWriter(_open(args.report, "w"))
    except OSError as exc:
        print(f"renderer: cannot open {exc.filename}: {exc.strerror}.", file=sys.stderr)
        return EXIT_USAGE
    sender = DemoCommandSender(report)
    diagnostics = Diagnostics(report, sender)
    feed = DemoFeed(feed_stream, report, diagnostics.submit)
    window = RendererWindow(
        feed,
        sender,
        gui=choice.gui,
        title=args.title,
        size=size,
        started_at=started_at,
        on_event=report,
    )
    diagnostics.attach(window)
    report("started", {"gui": choice.gui, "environment": choice.changed})
    if args.main_pid is not None:
        ProcessWatch(args.main_pid, window.main_process_gone).start()
    return window.run()


def _run_with_main_process(
    args: argparse.Namespace, size: tuple[int, int], started_at: float
) -> int:
    """The production mode: a window on the main process of ``args.data_dir``."""
    from pathlib import Path

    from ipc.endpoints import EndpointError
    from ipc.instance import InstanceLock
    from renderer.ipc_link import IpcCommandSender, IpcFeed
    from renderer.process_watch import ProcessWatch
    from renderer.reporter import WindowReporter

    data_dir = Path(args.data_dir)
    main_pid = args.main_pid if args.main_pid is not None else InstanceLock(data_dir).holder_pid()
    # Subscribe first, before Qt loads: the cached status is then waiting at first paint.
    reporter: WindowReporter | None = None
    try:
        report_sender = IpcCommandSender(data_dir)
        reporter = WindowReporter(report_sender, title=args.title)
        feed = IpcFeed(data_dir, reporter.control)
        sender = IpcCommandSender(data_dir)
    except EndpointError as exc:
        print(f"renderer: {exc}", file=sys.stderr)
        return EXIT_FAILED

    from renderer import environment

    choice = environment.prepare(force_offscreen=args.offscreen)

    # Imported only now: pywebview and Qt read the environment prepared above.
    from renderer.window import EXIT_MAIN_PROCESS_GONE, RendererWindow

    window = RendererWindow(
        feed,
        sender,
        gui=choice.gui,
        title=args.title,
        size=size,
        started_at=started_at,
        on_event=reporter.on_event,
        on_pushed=reporter.page_changed,
    )
    reporter.attach(window)
    if main_pid is not None:
        ProcessWatch(main_pid, window.main_process_gone).start()
    code = window.run()
    reporter.stop()
    if code != EXIT_MAIN_PROCESS_GONE:
        reporter.report_closed()
    sender.close()
    report_sender.close()
    return code
