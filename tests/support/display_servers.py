"""Display servers for the tests that need a real display: ``start_xvfb`` (an X server that
picks a free display number itself) and ``DisplayServer`` (such a child process and the
environment that points Qt at it)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

DISPLAY_READY_TIMEOUT_S = 20.0
XVFB_SCREEN = ("-screen", "0", "1280x1024x24")


class DisplayServer:
    """A display server child process and the environment that points Qt at it."""

    def __init__(self, process: subprocess.Popen[bytes], env: dict[str, str | None]) -> None:
        self.process = process
        self.env = env

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_xvfb(log_path: Path) -> DisplayServer:
    """``Xvfb -displayfd``: the server takes the first free display number and writes it
    to the pipe once it accepts connections, so there is neither a race for the number
    nor a wait for a socket file."""
    read_end, write_end = os.pipe()
    command = ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", *XVFB_SCREEN]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    os.close(write_end)
    # Xvfb writes the number and its newline separately, and dies if the pipe is closed
    # in between ("Cannot write display number"): read up to the newline.
    received = b""
    deadline = time.monotonic() + DISPLAY_READY_TIMEOUT_S
    try:
        while not received.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_end, 32) if ready else b""
            if not chunk:
                break  # Xvfb exited, or the deadline passed
            received += chunk
    finally:
        os.close(read_end)
    number = received.decode().strip()
    if not number.isdigit():
        process.kill()
        process.wait(10)
        raise RuntimeError(f"Xvfb did not start: {log_path.read_text(errors='replace')}")
    return DisplayServer(
        process, {"DISPLAY": f":{number}", "QT_QPA_PLATFORM": None, "WAYLAND_DISPLAY": None}
    )
