"""Run as root by ``test_sources_trouble.py``: drop to uid ``nobody``, then check that a
file without read permission is reported and skipped while others are read, and that it
is read once its permission comes back. Prints one JSON object.

Everything is imported while still root (the interpreter lives under /root, which nobody
cannot read); only then does the process give up its privileges, so the permission checks
are the kernel's, not a simulation.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue  # noqa: F401 - imported lazily by the watcher's worker threads
import sys
from pathlib import Path

import anyio._backends._asyncio  # loaded by the first anyio call: import it while we may
import anyio.to_thread  # noqa: F401 - idem

from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import RunningSources, open_spool, spooled_text

NOBODY = 65534


async def scenario(directory: Path) -> dict[str, object]:
    locked = directory / "locked.log"
    readable = directory / "readable.log"
    followed = directory / "followed.log"
    locked.write_bytes(b"secret line\n")
    locked.chmod(0)
    readable.write_bytes(b"readable line\n")
    followed.write_bytes(b"first\n")
    troubles: list[str] = []
    spool = open_spool(directory / "data")
    sources = SourceSet(
        [str(locked), str(readable), str(followed)],
        [],
        spool,
        on_trouble=troubles.append,
        rescan_interval=0.1,
        linger=0.0,
    )
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([readable, followed]), 10, "readable files")
        text_while_locked = spooled_text(spool)
        # Permission removed from a file already open: reading goes on (the descriptor
        # was opened while it was allowed, as with any Unix reader).
        writer = os.open(followed, os.O_WRONLY | os.O_APPEND)
        followed.chmod(0)
        os.write(writer, b"second\n")
        os.close(writer)
        await running.wait_until(
            lambda: "second\n" in spooled_text(spool), 10, "a line written after chmod 000"
        )
        locked_was_readable = os.access(locked, os.R_OK)
        locked.chmod(0o644)
        await running.wait_until(lambda: running.quiet([locked]), 10, "the unlocked file")
    result: dict[str, object] = {
        "uid": os.getuid(),
        "locked_was_readable": locked_was_readable,
        "troubles": troubles,
        "text_while_locked": text_while_locked,
        "text_after": spooled_text(spool),
        "trouble_count": sources.counters().troubles,
    }
    spool.close()
    return result


def main() -> None:
    directory = Path(sys.argv[1])
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    print(json.dumps(asyncio.run(scenario(directory))))


if __name__ == "__main__":
    main()
