"""``python -m renderer``: parse the options, prepare Qt, run the renderer host.

Two modes run the same ``RendererHost`` (``renderer.host``):

* ``--data-dir D`` (what the main process spawns, once per data dir, with the flags
  ``ipc.host_launch`` defines for both sides): ``--windows N``
  windows at start (``--geometry`` restores where the first ones were; ``--windows 0``
  for the tray alone), more whenever the main process asks (``HostControl``), and a tray
  icon where the desktop has a tray: Qt's on Linux (``renderer.tray``), pystray's on
  Windows (``renderer.tray_pystray``); ``--no-tray``: none.
  Each window has its own feed from ``ipc`` and its own reporter (``renderer.ipc_link``,
  ``renderer.reporter``); the host answers diagnostics for them and closes them all when
  the main process is gone: its pid exits (``--main-pid``, else the pid in the data
  dir's instance lock) or its heartbeat stops. It logs to the instance's ``windows.log``
  (``main_process.log_file``; ``log-monitor logs --windows``), warnings also to stderr.
* ``--demo-feed FILE`` (tests, trying the UI): one window, JSON lines in, reports out
  (``renderer.demo``).

Must not: import pywebview before ``renderer.environment.prepare`` has run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from ipc.host_launch import (
    EXIT_FAILED,
    EXIT_MAIN_PROCESS_GONE,
    EXIT_USAGE,
    add_host_flags,
    parse_geometry,
    tray_toolkit,
)
from ipc.messages import WindowGeometry

if TYPE_CHECKING:
    from renderer.tray import TrayIcon
    from renderer.tray_pystray import PystrayTray


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m renderer",
        description="Run the log-monitor renderer host: the process holding every window.",
    )
    add_host_flags(parser)
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
    if args.data_dir is not None and not args.verbose:
        # The log file takes what the host does (info); stderr, which the main process
        # copies into its own log, only what goes wrong.
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
        logging.getLogger().setLevel(logging.INFO)
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
    geometries = [parse_geometry(text) for text in args.geometry]
    if any(geometry is None for geometry in geometries) or args.windows < 0:
        print(
            "renderer: --geometry must look like 1100x800+40+30, --windows N >= 0.", file=sys.stderr
        )
        return EXIT_USAGE
    if args.data_dir is not None:
        return _run_host(args, size, [g for g in geometries if g is not None], started_at)

    from renderer import environment

    choice = environment.prepare(force_offscreen=args.offscreen)

    # Imported only now: pywebview and Qt read the environment prepared above.
    from renderer.demo import DemoCommandSender, DemoFeed, Diagnostics, ReportWriter
    from renderer.host import RendererHost
    from renderer.process_watch import ProcessWatch
    from renderer.window import WindowParts

    try:
        feed_stream = _open(args.demo_feed, "r")
        report = ReportWriter(_open(args.report, "w"))
    except OSError as exc:
        print(f"renderer: cannot open {exc.filename}: {exc.strerror}.", file=sys.stderr)
        return EXIT_USAGE
    sender = DemoCommandSender(report)
    diagnostics = Diagnostics(report, sender)

    def make_parts(number: int) -> WindowParts:
        feed = DemoFeed(feed_stream, report, diagnostics.submit, host.main_process_gone)
        return WindowParts(feed, sender, on_event=report, on_window=diagnostics.attach)

    host = RendererHost(
        make_parts, gui=choice.gui, title=args.title, size=size, started_at=started_at
    )
    host.open()
    report("started", {"gui": choice.gui, "environment": choice.changed})
    if args.main_pid is not None:
        ProcessWatch(args.main_pid, host.main_process_gone).start()
    return host.run()


class _CallsForTheHost:
    """Calls meant for the host that arrive before it exists (its subscription starts
    first: the cached ``HostControl`` can come at once), made once it does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host: Any = None
        self._waiting: list[Callable[[Any], None]] = []

    def call(self, fn: Callable[[Any], None]) -> None:
        with self._lock:
            host = self._host
            if host is None:
                self._waiting.append(fn)
                return
        fn(host)

    def bind(self, host: Any) -> None:
        with self._lock:
            self._host = host
            waiting, self._waiting = self._waiting, []
        for fn in waiting:
            fn(host)


def _run_host(
    args: argparse.Namespace,
    size: tuple[int, int],
    geometries: list[WindowGeometry],
    started_at: float,
) -> int:
    """The production mode: the renderer host of the main process of ``args.data_dir``."""
    import os
    from pathlib import Path

    from ipc.endpoints import EndpointError
    from ipc.instance import InstanceLock
    from ipc.messages import OpenWindow, WindowControl, WindowRef
    from main_process.log_file import add_log_file
    from renderer.ipc_link import HostSubscription, IpcCommandSender
    from renderer.process_watch import ProcessWatch
    from renderer.reporter import WindowReporter

    data_dir = Path(args.data_dir)
    add_log_file(data_dir, "windows")
    main_pid = args.main_pid if args.main_pid is not None else InstanceLock(data_dir).holder_pid()
    pid = os.getpid()
    logging.getLogger("renderer").info(
        "renderer host %d for %s (main process %s, %d windows)",
        pid,
        data_dir,
        main_pid,
        args.windows,
    )
    reporters: dict[int, WindowReporter] = {}
    for_host = _CallsForTheHost()
    for_tray = _CallsForTheHost()

    def control(request: WindowControl) -> None:
        for number, reporter in list(reporters.items()):
            if not request.windows or WindowRef(host=pid, window=number) in request.windows:
                reporter.control(request)

    try:
        page_sender = IpcCommandSender(data_dir)
        report_sender = IpcCommandSender(data_dir)
        subscription = HostSubscription(
            data_dir,
            on_open_requests=lambda total: for_host.call(lambda h: h.open_requests(total)),
            on_control=control,
            on_gone=lambda reason: for_host.call(lambda h: h.main_process_gone(reason)),
            on_notice=lambda notice: for_tray.call(lambda t: t.notice(notice.title, notice.body)),
            pid=pid,
        )
        subscription.start()
    except EndpointError as exc:
        print(f"renderer: {exc}", file=sys.stderr)
        return EXIT_FAILED

    from renderer import environment

    choice = environment.prepare(force_offscreen=args.offscreen)

    # Imported only now: pywebview and Qt read the environment prepared above.
    from renderer.host import RendererHost, TrayControl
    from renderer.window import WindowParts

    def make_parts(number: int) -> WindowParts:
        reporter = WindowReporter(report_sender, window=number, title=args.title, host=pid)
        reporters[number] = reporter

        def closed() -> None:
            reporters.pop(number, None)
            reporter.stop()
            reporter.report_closed()

        return WindowParts(
            subscription.window_source(),
            page_sender,
            on_event=reporter.on_event,
            on_pushed=reporter.page_changed,
            on_window=reporter.attach,
            on_closed=closed,
        )

    toolkit = tray_toolkit(sys.platform, choice.gui, os.environ)

    def make_tray(host: RendererHost, loop: Any) -> TrayControl:
        from renderer.tray_link import TrayReporter

        def ask_for_window() -> None:
            page_sender.send(OpenWindow(), 5.0)

        tray: TrayIcon | PystrayTray
        if toolkit == "pystray":
            from renderer.tray_pystray import PystrayTray, appkit_poster

            tray = PystrayTray(
                host_pid=pid,
                sender=page_sender,
                open_or_raise=lambda: host.open_or_raise(ask_for_window),
                reporter=TrayReporter(report_sender),
                # AppKit's status item only from the main thread, pywebview's Cocoa loop.
                poster=appkit_poster() if sys.platform == "darwin" else None,
            )
        else:
            from renderer.tray import TrayIcon

            tray = TrayIcon(
                host_pid=pid,
                sender=page_sender,
                open_or_raise=lambda: host.open_or_raise(ask_for_window),
                reporter=TrayReporter(report_sender),
            )
        subscription.window_source().attach(tray.update)
        for_tray.bind(tray)
        return tray

    host = RendererHost(
        make_parts,
        gui=choice.gui,
        title=args.title,
        size=size,
        started_at=started_at,
        # Qt's offscreen platform has no tray to show an icon in.
        tray_maker=None
        if args.no_tray
        or toolkit is None
        or (toolkit == "qt" and os.environ.get("QT_QPA_PLATFORM") == "offscreen")
        else make_tray,
    )
    for number in range(args.windows):
        host.open(geometry=geometries[number] if number < len(geometries) else None)
    for_host.bind(host)
    if main_pid is not None:
        ProcessWatch(main_pid, host.main_process_gone).start()
    code = host.run()
    for reporter in list(reporters.values()):
        reporter.stop()
    subscription.close()
    if code != EXIT_MAIN_PROCESS_GONE:
        for reporter in list(reporters.values()):
            reporter.report_closed()
    page_sender.close()
    report_sender.close()
    return code
