"""Log rotation as users get it: Debian's ``logrotate`` on real files, for the rotation tests.

One directory per rotation pattern, each holding one log ``app.log`` that a
``tests.support.rotating_writer`` process appends to. ``rotate_all()`` rotates every directory at
once: one ``logrotate -f`` run over a configuration with one block per pattern, and a
truncation in place for the pattern logrotate has no word for. ``kept_numbers()`` reads
back every line still on disk in a directory (the log and its rotated copies, compressed
or not), which is what the client must have shipped exactly once.

The patterns:

- ``create``: rename ``app.log`` to ``app.log.1`` (… ``.N``) and create a new one;
- ``create-compress``: the same, and gzip the renamed file at once (it is unlinked);
- ``delaycompress-dateext``: rename to ``app.log-<date and time>``, gzip it at the next
  rotation;
- ``copytruncate``: copy to ``app.log.1`` and truncate ``app.log`` in place;
- ``truncate``: empty ``app.log`` in place, keeping nothing.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import lzma
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

PATTERNS = ("create", "create-compress", "delaycompress-dateext", "copytruncate", "truncate")

_OPTIONS = {
    "create": ["create", "rotate 1000"],
    "create-compress": ["create", "compress", "rotate 1000"],
    # Seconds in the name: rotations come every second or so; one that would reuse a name
    # is skipped by logrotate ("destination … already exists"), which is what users get.
    "delaycompress-dateext": [
        "create",
        "compress",
        "delaycompress",
        "dateext",
        "dateformat -%Y%m%d-%H%M%S",
        "rotate 1000",
    ],
    "copytruncate": ["copytruncate", "rotate 1000"],
}

_LINE = re.compile(rb"^(\d{8}) (\S+) ")


class RotationScenarios:
    """The pattern directories under ``root``, their logrotate configuration and state."""

    def __init__(self, root: Path, patterns: tuple[str, ...] = PATTERNS) -> None:
        self.root = root
        self.patterns = patterns
        self.config = root / "logrotate.conf"
        self.state = root / "logrotate.state"
        self.rotations = 0
        root.mkdir(parents=True, exist_ok=True)
        blocks: list[str] = []
        for pattern in patterns:
            self.directory(pattern).mkdir(exist_ok=True)
            self.log(pattern).touch()
            if pattern in _OPTIONS:
                options = "\n".join(f"    {option}" for option in _OPTIONS[pattern])
                blocks.append(f"{self.log(pattern)} {{\n    missingok\n{options}\n}}\n")
        self.config.write_text("".join(blocks))

    def directory(self, pattern: str) -> Path:
        return self.root / pattern

    def log(self, pattern: str) -> Path:
        return self.directory(pattern) / "app.log"

    def globs(self) -> list[str]:
        """What the client follows: ``*.log`` in each directory (never the rotated names)."""
        return [str(self.directory(pattern) / "*.log") for pattern in self.patterns]

    def rotate_all(self) -> None:
        if any(pattern in _OPTIONS for pattern in self.patterns):
            result = subprocess.run(
                ["logrotate", "-f", "-s", str(self.state), str(self.config)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            # Exit 1 with "already exists, skipping rotation" is a dateext name reused
            # within one second: that rotation just does not happen.
            if result.returncode != 0 and "already exists" not in result.stderr:
                raise RuntimeError(f"logrotate failed: {result.stderr.strip()}")
        if "truncate" in self.patterns:
            os.truncate(self.log("truncate"), 0)
        self.rotations += 1

    def kept_numbers(self, pattern: str) -> set[int]:
        """The line numbers on disk in the pattern's directory, in every file there."""
        numbers: set[int] = set()
        for path in self.directory(pattern).iterdir():
            for number in _numbers(_read_any(path)):
                numbers.add(number)
        return numbers


def _read_any(path: Path) -> bytes:
    name = path.name
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".bz2"):
        return bz2.decompress(path.read_bytes())
    if name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    return path.read_bytes()


def _numbers(data: bytes) -> Iterator[int]:
    for raw in data.splitlines():
        match = _LINE.match(raw)
        if match is not None:
            yield int(match.group(1))


def stored_numbers(json_dump: bytes) -> dict[str, list[int]]:
    """Per writer name, the line numbers in the order the server stored them, from the
    server's ``dump --json``. Chunk by chunk: a rotated generation can end in the middle
    of a line (``copytruncate`` copies while the writer writes), and that partial last
    line must not hide the first line of whatever chunk the server stored next."""
    stored: dict[str, list[int]] = {}
    for record in json_dump.splitlines():
        text: str = json.loads(record)["chunk"]
        for raw in text.encode().splitlines():
            match = _LINE.match(raw)
            if match is not None:
                stored.setdefault(match.group(2).decode(), []).append(int(match.group(1)))
    return stored


def order_problems(numbers: list[int]) -> tuple[int, int]:
    """(inversions, repeats) in a sequence that should be strictly increasing."""
    inversions = sum(1 for a, b in itertools.pairwise(numbers) if b < a)
    repeats = len(numbers) - len(set(numbers))
    return inversions, repeats


def describe_trouble(numbers: list[int], limit: int = 3) -> str:
    """The first few places where the order breaks, with their neighbours."""
    places = [i for i in range(1, len(numbers)) if numbers[i] <= numbers[i - 1]][:limit]
    return "; ".join(f"…{numbers[max(0, i - 3) : i + 3]}…" for i in places)
