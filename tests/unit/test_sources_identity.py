"""File identity: head fingerprints that grow with a short file, the anchor that tells a
recreated log with the same banner from the one that was read, the stored blob, and the
backlog content key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from main_process.sources.file_follower import FileFollower, FollowerRole, open_log_file
from main_process.sources.file_identity import (
    FINGERPRINT_SPAN,
    Anchor,
    CheckpointFingerprint,
    HeadFingerprint,
    backlog_content_key,
    describes,
    read_before,
    read_head,
)


@contextmanager
def opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def fingerprint_at(path: Path, offset: int) -> CheckpointFingerprint:
    with opened(path) as fd:
        return CheckpointFingerprint(
            HeadFingerprint.of(read_head(fd)), Anchor.of(read_before(fd, offset))
        )


def test_short_head_is_extended_while_the_file_grows() -> None:
    short = HeadFingerprint.of(b"abc")
    assert short.length == 3
    assert not short.complete
    longer = short.extended(b"abcdef")
    assert longer == HeadFingerprint.of(b"abcdef")
    assert short.extended(b"abX") is None  # rewritten: not a prefix any more
    assert short.extended(b"ab") is None  # shorter than what was hashed
    full = HeadFingerprint.of(b"x" * 5000)
    assert full.complete
    assert full.length == FINGERPRINT_SPAN
    assert full.extended(b"x" * 6000) is full


def test_blob_round_trip_and_unknown_blobs() -> None:
    fingerprint = CheckpointFingerprint(HeadFingerprint.of(b"head"), Anchor.of(b"before"))
    assert CheckpointFingerprint.from_bytes(fingerprint.to_bytes()) == fingerprint
    assert CheckpointFingerprint.from_bytes(None) is None
    assert CheckpointFingerprint.from_bytes(b"junk") is None
    assert CheckpointFingerprint.from_bytes(b"\x09" + fingerprint.to_bytes()[1:]) is None


def test_describes_the_same_file_and_a_copy_not_a_lookalike(tmp_path: Path) -> None:
    banner = b"same banner line\n" * 100  # 1700 bytes: the heads are equal
    original = tmp_path / "a.log"
    original.write_bytes(banner + b"line one\nline two\n")
    offset = original.stat().st_size
    fingerprint = fingerprint_at(original, offset)
    with open(original, "ab") as file:
        file.write(b"line three\n")
    copy = tmp_path / "copy.log"
    copy.write_bytes(original.read_bytes())
    lookalike = tmp_path / "b.log"
    lookalike.write_bytes(banner + b"other one\nother two\nother three\n")
    shorter = tmp_path / "c.log"
    shorter.write_bytes(banner)
    for path, expected in [(original, True), (copy, True), (lookalike, False), (shorter, False)]:
        with opened(path) as fd:
            assert describes(fingerprint, offset, fd, path.stat().st_size) is expected, path


def test_follower_extends_a_short_head_in_its_checkpoints(tmp_path: Path) -> None:
    log = tmp_path / "grow.log"
    log.write_bytes(b"tiny\n")
    fd, status = open_log_file(str(log))
    follower = FileFollower(str(log), fd, status, 0, FollowerRole.LIVE)
    try:
        follower.read(1 << 20, now=0.0)
        follower.poll(now=10.0)
        first = CheckpointFingerprint.from_bytes(follower.pending[-1].checkpoint.fingerprint)
        assert first is not None
        assert first.head.length == 5
        with open(log, "ab") as file:
            file.write(b"y" * 3000 + b"\n")
        follower.read(1 << 20, now=11.0)
        follower.poll(now=20.0)
        last = follower.pending[-1].checkpoint
        second = CheckpointFingerprint.from_bytes(last.fingerprint)
        assert second is not None
        assert second.head.length == FINGERPRINT_SPAN
        with opened(log) as check:
            assert describes(second, last.offset, check, log.stat().st_size)
    finally:
        follower.close()


def test_backlog_content_key_tells_files_with_one_banner_apart(tmp_path: Path) -> None:
    banner = b"Game engine 4.2 starting\n" * 60
    keys = set()
    for index, body in enumerate([b"a\n", b"b\n", b"a\nb\n"]):
        path = tmp_path / f"{index}.log"
        path.write_bytes(banner + body)
        with opened(path) as fd:
            keys.add(backlog_content_key(fd, path.stat().st_size))
    assert len(keys) == 3
    renamed = tmp_path / "0.log"
    moved = renamed.rename(tmp_path / "moved.log")
    with opened(moved) as fd:
        assert backlog_content_key(fd, moved.stat().st_size) in keys
