"""Starting the renderer host: its command line and its exit statuses, defined once.

The main process starts ``python -m renderer`` (``main_process.windows``) and the host
parses what it was given (``renderer.cli``); both import this module, so a flag is
spelled in one place. Owns:

* **the command line** of the host in its production mode: ``host_command`` spells it
  (``--data-dir``, ``--main-pid``, ``--windows``, one ``--geometry`` per window to put back
  where it was, ``--no-tray``), ``add_host_flags`` declares the same flags on the host's
  parser;
* **a window's geometry as text**, X11's ``WxH+X+Y`` (``format_geometry`` /
  ``parse_geometry``), how a restarted host learns where its windows were;
* **the exit statuses** that tell the main process why the host ended: closed by the user
  (``EXIT_CLOSED``), a failure or a usage error (the main process then explains its
  stderr), the main process gone (``EXIT_MAIN_PROCESS_GONE``: not started again), nothing
  to show (``EXIT_NOTHING_TO_SHOW``: no window and no tray; not a failure);
* **which toolkit draws the tray** (``tray_toolkit``): the host makes its tray with it,
  and the main process asks it whether a tray could appear before it starts a host for
  the tray alone.

Must not: import Qt, pywebview or anything of ``renderer`` or ``main_process`` (both
sides import this, and the main process never loads the GUI), or start anything.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal, TypeAlias

from ipc.messages import WindowGeometry

# The module the main process runs as the renderer host (``python -m renderer``).
HOST_MODULE: Final = "renderer"

FLAG_DATA_DIR: Final = "--data-dir"
FLAG_MAIN_PID: Final = "--main-pid"
FLAG_WINDOWS: Final = "--windows"
FLAG_GEOMETRY: Final = "--geometry"
FLAG_NO_TRAY: Final = "--no-tray"

EXIT_CLOSED: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_MAIN_PROCESS_GONE: Final = 3
EXIT_NOTHING_TO_SHOW: Final = 4

TrayToolkit: TypeAlias = Literal["qt", "pystray"]
# The environment variable that asks for pystray's tray whatever the platform.
TRAY_TOOLKIT_VARIABLE: Final = "LOG_MONITOR_TRAY"


def host_command(
    python: str,
    data_dir: Path,
    *,
    main_pid: int,
    windows: int,
    geometries: Sequence[WindowGeometry] = (),
    tray: bool = True,
) -> list[str]:
    """The command line that starts the renderer host of ``data_dir`` with ``windows``
    windows (the first ones at ``geometries``), and a tray unless ``tray`` is False."""
    command = [
        python,
        "-m",
        HOST_MODULE,
        FLAG_DATA_DIR,
        str(data_dir),
        FLAG_MAIN_PID,
        str(main_pid),
        FLAG_WINDOWS,
        str(windows),
    ]
    for geometry in geometries:
        command += [FLAG_GEOMETRY, format_geometry(geometry)]
    if not tray:
        command.append(FLAG_NO_TRAY)
    return command


def add_host_flags(parser: argparse.ArgumentParser) -> None:
    """Declare on ``parser`` the flags ``host_command`` spells."""
    parser.add_argument(
        FLAG_DATA_DIR,
        metavar="DIR",
        help="the data dir of the running main process to show (what it spawns the host with)",
    )
    parser.add_argument(
        FLAG_WINDOWS,
        type=int,
        default=1,
        metavar="N",
        help="with --data-dir: windows to open at start (default 1)",
    )
    parser.add_argument(
        FLAG_GEOMETRY,
        action="append",
        default=[],
        metavar="WxH+X+Y",
        help="with --data-dir: size and place of the next window opened at start (repeatable)",
    )
    parser.add_argument(
        FLAG_MAIN_PID,
        type=int,
        metavar="PID",
        help="close the window when this process exits",
    )
    parser.add_argument(
        FLAG_NO_TRAY,
        action="store_true",
        help="with --data-dir: no tray icon (the host ends with its last window)",
    )


def format_geometry(geometry: WindowGeometry) -> str:
    """``WxH+X+Y``, as ``--geometry`` takes it."""
    return f"{geometry.width}x{geometry.height}{geometry.x:+d}{geometry.y:+d}"


_GEOMETRY = re.compile(r"(\d+)x(\d+)([+-]\d+)([+-]\d+)")


def parse_geometry(text: str) -> WindowGeometry | None:
    """``WxH+X+Y`` (X11's form) as a ``WindowGeometry``; None if it is not that."""
    match = _GEOMETRY.fullmatch(text.strip())
    if match is None:
        return None
    width, height, x, y = (int(group) for group in match.groups())
    return WindowGeometry(x=x, y=y, width=width, height=height)


def tray_toolkit(platform: str, gui: str | None, environ: Mapping[str, str]) -> TrayToolkit | None:
    """Which toolkit draws the tray icon of a host on ``platform`` running ``gui`` (None:
    no tray): Qt's ``QSystemTrayIcon`` where the host runs Qt (Linux); pystray on Windows
    and macOS, where the host runs pywebview's native engine; pystray anywhere when
    ``LOG_MONITOR_TRAY=pystray`` asks for it (a diagnostic: the tests run it on Linux).
    ``renderer.tray_model`` says why each."""
    if environ.get(TRAY_TOOLKIT_VARIABLE) == "pystray":
        return "pystray"
    if gui == "qt":
        return "qt"
    if platform in ("win32", "darwin"):
        return "pystray"
    return None
