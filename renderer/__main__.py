"""``python -m renderer``: run the renderer host (see ``renderer.cli`` for the options)."""

from __future__ import annotations

import time

# Taken before the heavy imports, so "window start" in the timings means process start.
STARTED_AT = time.monotonic()

if __name__ == "__main__":
    from renderer.cli import main

    raise SystemExit(main(started_at=STARTED_AT))
