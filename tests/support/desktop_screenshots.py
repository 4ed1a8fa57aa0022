"""Make README's desktop screenshots with the real program on a private desktop.

``python -m tests.support.desktop_screenshots DIR`` starts Xvfb with a plain background, Debian's
``trayer`` and ``dunst`` on a private session bus (``tests.support.desktop_session``), the real
server with a user, and ``log-monitor run --demo --windows 0`` (the tray alone, as at
login, following a generated Star Citizen install); it signs the user in, opens the
tray's menu with a right click and saves ``DIR/tray-menu.png``, takes the menu's Open
window and, once the window's chart holds a minute of shipping, saves the window as
``DIR/window.png`` (``log-monitor screenshot``), closes it, then has the server revoke the
user's sessions and saves the notification the desktop shows as ``DIR/notification.png``.
Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.server_process import ServerProcess, server_cli
from harness.waiting import wait_until
from ipc.host import connect_sync_client
from ipc.inspection import ask_windows
from ipc.messages import Connect, Ok
from main_process.connection.state import SIGNED_OUT_MESSAGE
from tests.support.desktop_session import DesktopSession
from tests.support.live_main import PASSWORD, START_TIMEOUT_S, USER
from tests.support.star_citizen_install import make_install
from tests.support.tray_watch import TrayMain, embedded_at, shown

# The window's chart when it is taken: CHART_SECONDS of shipping, with the server away
# for OUTAGE_S from the OUTAGE_AT_S'th second.
CHART_SECONDS = 75
OUTAGE_AT_S = 25
OUTAGE_S = 20

# A window at the bottom of the stack painted a calm colour, so the shots are not black.
_BACKGROUND = """
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QWidget
app = QApplication(["background", "-platform", "xcb"])
wall = QWidget(None, Qt.WindowType.FramelessWindowHint)
palette = wall.palette()
palette.setColor(QPalette.ColorRole.Window, QColor("#4a6378"))
wall.setPalette(palette)
wall.setAutoFillBackground(True)
wall.setGeometry(app.primaryScreen().geometry())
wall.show()
app.exec()
"""


def _geometry(line: str) -> tuple[int, int, int, int]:
    found = re.search(r"(\d+)x(\d+)\+(-?\d+)\+(-?\d+)", line)
    assert found is not None, line
    width, height, x, y = (int(group) for group in found.groups())
    return x, y, width, height


def make(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lm-shots-") as scratch:
        work = Path(scratch)
        desktop = DesktopSession(work / "desktop", tray=False, notifications=False).start()
        background = subprocess.Popen(
            [sys.executable, "-c", _BACKGROUND], env=desktop.environment(os.environ)
        )
        server_dir = work / "server"
        server_cli(server_dir, "add-user", USER, "--password-stdin", input_text=PASSWORD + "\n")
        server = ServerProcess(server_dir).start()
        tray_main: TrayMain | None = None
        try:
            wait_until(lambda: '"background"' in desktop.window_tree(), 30, "the background")
            desktop.start_tray()
            desktop.start_notifications()
            wine_prefix = work / "home" / "Games" / "star-citizen"
            make_install(wine_prefix, ("LIVE", "PTU"))
            tray_main = TrayMain(
                work / "client",
                desktop,
                server.url,
                "--game",
                "star-citizen",
                "--game-dir",
                str(wine_prefix),
            )
            main = tray_main.main
            tray_main.tray.wait(shown("connected"), START_TIMEOUT_S, "the tray")
            login = main.command(
                "login", "--identifier", USER, "--password-stdin", input_text=PASSWORD
            )
            assert login.returncode == 0, login.stderr
            where = embedded_at(desktop)
            tray_main.tray.wait(
                lambda t: "Sign out" in [i.text for i in t.menu] and t.geometry == where,
                30,
                "Sign out in the menu",
            )
            # The menu, as a right click opens it (at the icon's lower edge: the menu opens
            # where the pointer is, and should not hide the icon).
            before = set(desktop.top_level_windows())
            desktop.xdotool(
                "mousemove",
                str(where.x + where.width // 2),
                str(where.y + where.height - 1),
                "click",
                "3",
            )
            popup: list[str] = []

            def menu_open() -> bool:
                popup[:] = [
                    line
                    for line in set(desktop.top_level_windows()) - before
                    if '"Log monitor"' in line
                ]
                return bool(popup)

            # Polling the X window tree: there is no event to wait on.
            wait_until(menu_open, 15, "the menu to open", interval=0.05)
            x, y, width, height = _geometry(popup[0])
            desktop.xdotool("mousemove", str(x + width // 2), str(y + 12))  # "Open window"
            time.sleep(0.5)  # let the highlighted entry paint: a picture, not a test
            left = min(x, where.x) - 160
            desktop.grab(directory / "tray-menu.png", left, 0, 1280 - left, y + height + 40)

            # The highlighted Open window, taken: a window whose chart shows shipping, the
            # server away for a while (chunks wait) and the catching up when it is back.
            desktop.xdotool("key", "Return")
            [ref] = main.wait_windows(1)

            def chart_samples() -> int:
                return int(main.watch.windows[ref].view["chart"]["samples"])

            main.watch.wait(lambda: chart_samples() >= OUTAGE_AT_S, 60, "shipping drawn")
            server.stop()
            time.sleep(OUTAGE_S)  # the length of the outage drawn: a picture, not a test
            server.start()
            with connect_sync_client(main.data_dir) as client:
                assert isinstance(client.request(Connect(), timeout=10), Ok)
            main.watch.wait(
                lambda: (
                    chart_samples() >= CHART_SECONDS
                    and main.watch.status().state == "connected"
                    and main.watch.status().buffered_chunks == 0
                ),
                CHART_SECONDS + 60,
                f"{CHART_SECONDS} s of history in the window's chart, caught up",
            )
            shots = work / "shots"
            taken = main.command("screenshot", str(shots))
            assert taken.returncode == 0, taken.stderr
            shutil.copyfile(shots / f"window-{ref.host}-{ref.window}.png", directory / "window.png")
            ask_windows(
                main.data_dir, "evaluate", script="window.close(); true", windows=(ref,), timeout=5
            )
            main.watch.wait(lambda: ref in main.watch.closed, 20, "the window to close")

            # The server ends alice's sessions: a notification says she is signed out.
            revoked = server_cli(server_dir, "revoke", USER)
            assert revoked.returncode == 0, revoked.stderr
            main.watch.wait(
                lambda: main.watch.status().last_error == SIGNED_OUT_MESSAGE, 30, "signed out"
            )
            wait_until(lambda: desktop.notifications_seen() >= 1, 15, "the notification")
            # Back on the server as a guest: the icon shows connected beside the notice.
            tray_main.tray.wait(shown("connected"), 30, "connected as a guest")
            time.sleep(0.5)  # let dunst paint it: a picture, not a test
            [dunst] = [line for line in desktop.top_level_windows() if '"Dunst"' in line]
            x, y, width, height = _geometry(dunst)
            left = x - 40
            desktop.grab(directory / "notification.png", left, 0, 1280 - left, y + height + 30)
        finally:
            if tray_main is not None:
                tray_main.close()
            server.stop()
            background.terminate()
            background.wait(10)
            desktop.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    make(parser.parse_args().directory)


if __name__ == "__main__":
    main()
