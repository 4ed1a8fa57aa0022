"""A log writer as its own process, the way real programs write logs, for the rotation tests.

``python -m tests.support.rotating_writer RATE STOP_FILE PATH...`` appends numbered lines to every
PATH at RATE lines per second each, with one ``O_APPEND`` descriptor per file held open,
until STOP_FILE exists. Each batch of lines is one ``write``, so a reader never sees half
a line in the middle of a file. Like Python's ``WatchedFileHandler`` (and programs told by
logrotate's ``postrotate`` to reopen), it reopens a path when the file there is no longer
the one it holds (rename-and-create, delete); with ``copytruncate`` or a truncation in
place it keeps its descriptor, and ``O_APPEND`` puts the next line at the new end.

Line ``n`` of the file named ``NAME`` reads ``"%08d NAME <padding>\\n" % n``. When it stops,
the writer prints one JSON object: the number of lines written to each path.
"""

from __future__ import annotations

import json
import os
import sys
import time

PADDING = "x" * 60


def line(number: int, name: str) -> bytes:
    return f"{number:08d} {name} {PADDING}\n".encode()


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def _reopen_if_replaced(path: str, fd: int) -> int:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        # Renamed away and not created yet: keep writing to the old file for now.
        return fd
    held = os.fstat(fd)
    if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
        return fd
    os.close(fd)
    return _open(path)


def main(argv: list[str]) -> int:
    rate = float(argv[0])
    stop_file = argv[1]
    paths = argv[2:]
    names = [os.path.basename(os.path.dirname(path)) for path in paths]
    fds = [_open(path) for path in paths]
    written = [0] * len(paths)
    started = time.monotonic()
    tick = 0.005
    while not os.path.exists(stop_file):
        due = int((time.monotonic() - started) * rate)
        for index, path in enumerate(paths):
            fds[index] = _reopen_if_replaced(path, fds[index])
            if due > written[index]:
                data = b"".join(line(n, names[index]) for n in range(written[index], due))
                os.write(fds[index], data)
                written[index] = due
        time.sleep(tick)
    for fd in fds:
        os.close(fd)
    print(json.dumps(dict(zip(paths, written, strict=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
