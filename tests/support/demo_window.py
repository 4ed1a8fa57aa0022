"""A demo window started and ready to take messages (``start_window``: a ``python -m renderer
--demo-feed -`` subprocess, offscreen), and the status message it is fed (``status``)."""

from __future__ import annotations

from typing import Any

from renderer.demo_driver import DemoWindowProcess

START_TIMEOUT_S = 60.0


def status(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "status",
        "state": "connected",
        "server": "http://127.0.0.1:3000",
        "clientId": "client-1",
    }
    base.update(fields)
    return base


def start_window(*extra: str) -> DemoWindowProcess:
    window = DemoWindowProcess(["--offscreen", "--size", "1000x760", *extra])
    window.send(status())
    try:
        window.wait_event("ready", START_TIMEOUT_S)
    except Exception:
        window.close()
        raise
    return window
