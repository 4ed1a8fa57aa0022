"""``python -m renderer``: parse the options, prepare Qt, open one window, exit.

Phase 1 runs only in demo mode (``--demo-feed``, see ``renderer.demo``); phase 2 adds the
ipc options (the instance's runtime directory) and builds the feed and the command
sender from ``ipc`` instead. Both end in the same ``RendererWindow``.

Must not: import pywebview before ``renderer.environment.prepare`` has run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import IO

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m renderer",
        description="Open one log-monitor window.",
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
    if args.demo_feed is None:
        print(
            "renderer: no update source; pass --demo-feed FILE (the ipc connection to a "
            "running main process is not wired in yet).",
            file=sys.stderr,
        )
        return EXIT_USAGE

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
