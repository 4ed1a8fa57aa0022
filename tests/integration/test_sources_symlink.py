"""Symbolic links among followed files (``sources`` module docstring, "Symbolic links"): a
link swapped in for a followed file, matched by a glob, or found among a log's rotated
siblings is refused and reported in one sentence, and its target is never opened (an
inotify watch on the target proves it); a path named explicitly that was a link when first
seen is followed, also after it is re-pointed; ``follow_symlinks`` "never" and "always".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import os
import struct
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from harness.main_process_runner import MainProcessRunner
from harness.server_process import ServerProcess
from harness.waiting import wait_until
from main_process.sources.file_follower import FileTrouble, SymlinkPolicy, open_log_file
from main_process.sources.source_set import SourceSet
from main_process.spool.chunks import Spool
from tests.support.sources_helpers import RunningSources, append_bytes, open_spool, spooled_text

pytestmark = pytest.mark.timeout(90)

SECRET = b"root:SECRET-CONTENT-THAT-MUST-NOT-SHIP\n"
_IN_ACCESS = 0x001
_IN_OPEN = 0x020
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


class OpenWatch:
    """Counts the opens and reads of some files by any process (inotify ``IN_OPEN`` and
    ``IN_ACCESS``): a target that was never opened has a count of 0."""

    def __init__(self, *paths: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        self._names: dict[int, str] = {}
        for path in paths:
            wd = libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_OPEN | _IN_ACCESS)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self._names[wd] = path.name
        self.events: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return self.events
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                kind = "open" if mask & _IN_OPEN else "access"
                self.events.append(f"{kind} {self._names.get(wd, '?')}")

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def swap_in_symlink(path: Path, target: Path) -> None:
    """Replace ``path`` by a link to ``target`` in one rename (what an attacker who can
    write the directory does)."""
    staging = path.with_name(f".{path.name}.link")
    staging.symlink_to(target)
    os.replace(staging, path)


def secret_file(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    secret = directory / "shadow"
    secret.write_bytes(SECRET)
    return secret


def refused(path: Path) -> str:
    return (
        f"{path} is a symbolic link, which is not followed (its target is not read; "
        "see the follow_symlinks setting)."
    )


def make_sources(
    patterns: list[str],
    tmp_path: Path,
    troubles: list[str],
    follow_symlinks: SymlinkPolicy = "named",
) -> tuple[SourceSet, Spool]:
    spool = open_spool(tmp_path / "data")
    sources = SourceSet(
        patterns,
        [],
        spool,
        on_trouble=troubles.append,
        linger=0.0,
        partial_line_linger=0.05,
        rescan_interval=0.05,
        detached_idle_close=0.2,
        follow_symlinks=follow_symlinks,
    )
    return sources, spool


def test_open_log_file_refuses_a_link_unless_asked_to_follow(tmp_path: Path) -> None:
    target = tmp_path / "target.log"
    target.write_bytes(b"line\n")
    link = tmp_path / "link.log"
    link.symlink_to(target)
    with OpenWatch(target) as watch:
        with pytest.raises(FileTrouble) as trouble:
            open_log_file(str(link))
        assert str(trouble.value) == refused(link)
        assert watch.drain() == []
        fd, status = open_log_file(str(link), follow_symlink=True)
        os.close(fd)
        assert status.st_size == 5
        assert "open target.log" in watch.drain()


async def test_a_symlink_swapped_in_under_a_followed_glob_is_refused_and_reported(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    secret = secret_file(tmp_path / "etc")
    app = logs / "app.log"
    app.write_bytes(b"app line 1\n")
    troubles: list[str] = []
    sources, spool = make_sources([str(logs / "*.log")], tmp_path, troubles)
    with OpenWatch(secret) as watch:
        async with RunningSources(sources) as running:
            await running.wait_until(lambda: running.quiet([app], 1), 10, "app.log read")
            # The followed file becomes a link to a file the writer of logs/ cannot read,
            # and a new link appears under the glob.
            swap_in_symlink(app, secret)
            (logs / "new.log").symlink_to(secret)
            await running.wait_until(
                lambda: {refused(app), refused(logs / "new.log")} <= set(troubles),
                10,
                "both links reported",
            )
            # Whatever the next rounds do, they do it before a later regular file is read.
            later = logs / "later.log"
            later.write_bytes(b"a regular file after the links\n")
            await running.wait_until(
                lambda: "a regular file after the links\n" in spooled_text(spool),
                10,
                "the later file",
            )
            # The old app.log (still open, detached) was read to its end and closed.
            await running.wait_until(
                lambda: all(f.path != str(app) for f in sources.followed()), 10, "app.log closed"
            )
        assert watch.drain() == [], "the link's target was opened"
    text = spooled_text(spool)
    assert "SECRET" not in text
    assert text.count("app line 1\n") == 1
    assert troubles.count(refused(app)) == 1, "reported once, not at every rescan"
    assert sources.last_trouble is not None
    spool.close()


async def test_a_named_file_swapped_for_a_symlink_is_refused(tmp_path: Path) -> None:
    """Named explicitly, but a regular file when first seen: a link swapped in later is
    refused (only a path that was a link from the start is followed through one)."""
    app = tmp_path / "app.log"
    app.write_bytes(b"first\n")
    secret = secret_file(tmp_path / "etc")
    troubles: list[str] = []
    sources, spool = make_sources([str(app)], tmp_path, troubles)
    with OpenWatch(secret) as watch:
        async with RunningSources(sources) as running:
            await running.wait_until(lambda: running.quiet([app], 1), 10, "app.log read")
            swap_in_symlink(app, secret)
            await running.wait_until(lambda: refused(app) in troubles, 10, "the report")
            # Back to a regular file: followed again, and the trouble is over.
            app.unlink()
            app.write_bytes(b"second\n")
            await running.wait_until(
                lambda: "second\n" in spooled_text(spool),
                10,
                "the new app.log",
            )
        assert watch.drain() == []
    assert "SECRET" not in spooled_text(spool)
    spool.close()


async def test_a_link_named_explicitly_is_followed_and_re_pointed(tmp_path: Path) -> None:
    """The allowed case: ``latest.log`` named on the command line points at today's file
    and is re-pointed at the next one; both are read, under the link's name."""
    logs = tmp_path / "logs"
    logs.mkdir()
    first = logs / "app-1.log"
    first.write_bytes(b"day one\n")
    latest = logs / "latest.log"
    latest.symlink_to(first.name)
    troubles: list[str] = []
    sources, spool = make_sources([str(latest)], tmp_path, troubles)
    async with RunningSources(sources) as running:
        await running.wait_until(
            lambda: "day one\n" in spooled_text(spool),
            10,
            "the first target",
        )
        append_bytes(first, b"day one, later\n")
        second = logs / "app-2.log"
        second.write_bytes(b"day two\n")
        swap_in_symlink(latest, Path(second.name))
        await running.wait_until(
            lambda: "day two\n" in spooled_text(spool),
            10,
            "the second target",
        )
    chunks = spool.pending(limit=1000)
    assert "".join(c.text for c in chunks) == "day one\nday one, later\nday two\n"
    assert {c.source.path if c.source else None for c in chunks} == {str(latest)}
    assert troubles == []
    spool.close()


@pytest.mark.parametrize(
    ("policy", "named_followed", "globbed_followed"),
    [("never", False, False), ("named", True, False), ("always", True, True)],
)
async def test_the_follow_symlinks_setting(
    tmp_path: Path, policy: SymlinkPolicy, named_followed: bool, globbed_followed: bool
) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "named-target").write_bytes(b"through the named link\n")
    (targets / "globbed-target").write_bytes(b"through the globbed link\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    named = tmp_path / "latest.log"
    named.symlink_to(targets / "named-target")
    (logs / "linked.log").symlink_to(targets / "globbed-target")
    plain = logs / "plain.log"
    plain.write_bytes(b"plain\n")
    troubles: list[str] = []
    sources, spool = make_sources(
        [str(named), str(logs / "*.log")], tmp_path, troubles, follow_symlinks=policy
    )
    expected_refusals = {
        refused(path)
        for path, followed in ((named, named_followed), (logs / "linked.log", globbed_followed))
        if not followed
    }
    async with RunningSources(sources) as running:
        await running.wait_until(
            lambda: (
                "plain\n" in spooled_text(spool)
                and expected_refusals <= set(troubles)
                and (not named_followed or "named link" in spooled_text(spool))
                and (not globbed_followed or "globbed link" in spooled_text(spool))
            ),
            10,
            "what the policy follows, and its refusals",
        )
    text = spooled_text(spool)
    assert ("through the named link\n" in text) is named_followed
    assert ("through the globbed link\n" in text) is globbed_followed
    assert set(troubles) == expected_refusals
    spool.close()


async def test_links_among_rotated_siblings_and_backlog_globs_are_refused(tmp_path: Path) -> None:
    """Generations rotated while the client was down are looked for among the log's
    siblings: a sibling that is a link (plain or compressed) is refused, its target never
    opened; so is a link a backlog glob matches."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_bytes(b"generation one\n")
    troubles: list[str] = []
    sources, spool = make_sources([str(app)], tmp_path, troubles)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([app], 1), 10, "the first run")
    # While the client is down: app.log is rotated away and deleted, and links appear
    # where rotated generations would be.
    etc = tmp_path / "etc"
    secret = secret_file(etc)
    secret_gz = etc / "shadow.gz"
    secret_gz.write_bytes(gzip.compress(SECRET))
    app.unlink()
    app.write_bytes(b"generation three\n")
    (logs / "app.log.1").symlink_to(secret)
    (logs / "app.log.2.gz").symlink_to(secret_gz)
    backlog = tmp_path / "old"
    backlog.mkdir()
    (backlog / "old.log").symlink_to(secret)
    (backlog / "older.log").write_bytes(b"an old log\n")
    troubles.clear()
    spool.close()
    spool = open_spool(tmp_path / "data")
    sources = SourceSet(
        [str(app)],
        [str(backlog / "*.log")],
        spool,
        on_trouble=troubles.append,
        linger=0.0,
        rescan_interval=0.05,
    )
    with OpenWatch(secret, secret_gz) as watch:
        async with RunningSources(sources) as running:
            await running.wait_until(
                lambda: (
                    "generation three\n" in spooled_text(spool)
                    and "an old log\n" in spooled_text(spool)
                ),
                10,
                "the new generation and the backlog",
            )
        assert watch.drain() == []
    assert set(troubles) == {
        refused(logs / "app.log.1"),
        refused(logs / "app.log.2.gz"),
        refused(backlog / "old.log"),
    }
    assert "SECRET" not in spooled_text(spool)
    spool.close()


def test_the_main_process_reports_a_swapped_link_in_last_error_and_never_ships_it(
    tmp_path: Path, server: ServerProcess
) -> None:
    """End to end: ``log-monitor run 'logs/*.log'`` with app.log swapped for a link;
    ``lastError`` says so in one sentence and the server never stores the target."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_bytes(b"before the swap\n")
    secret = secret_file(tmp_path / "etc")
    main = MainProcessRunner(
        tmp_path / "client", str(logs / "*.log"), "--server", server.url, "--chunk-linger-ms", "0"
    )
    try:
        main.start()
        wait_until(lambda: b"before the swap\n" in server.dump(), 30, "the first line stored")
        with OpenWatch(secret) as watch:
            swap_in_symlink(app, secret)
            status = main.wait_for_status(
                lambda s: s.get("lastError") == refused(app), 30, "lastError naming the link"
            )
            assert "\n" not in status["lastError"]
            (logs / "after.log").write_bytes(b"after the swap\n")
            wait_until(lambda: b"after the swap\n" in server.dump(), 30, "a later file stored")
            assert watch.drain() == []
        assert SECRET not in server.dump()
    finally:
        main.ensure_stopped()
