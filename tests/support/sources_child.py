"""A main process reduced to its sources: follow PATTERN into the spool in DATA_DIR until
killed. ``test_sources_kill.py`` kills it with SIGKILL at random moments."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import open_spool


async def follow(data_dir: Path, pattern: str) -> None:
    spool = open_spool(data_dir)
    sources = SourceSet([pattern], [], spool, linger=0.01)
    print("ready", flush=True)
    await sources.run()


if __name__ == "__main__":
    asyncio.run(follow(Path(sys.argv[1]), sys.argv[2]))
