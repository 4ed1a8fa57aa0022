"""SegmentFiles: where chunk texts are written, read back, counted and deleted (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from main_process.spool import segments as segments_module
from main_process.spool.segments import (
    MIN_ROLL_BYTES,
    ROLL_BYTES,
    SegmentFiles,
    SegmentMissing,
    roll_bytes_for,
)


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def opened(directory: Path, live: dict[int, int] | None = None, roll: int = 100) -> SegmentFiles:
    segments = SegmentFiles(directory, roll_bytes=roll)
    segments.open(live or {})
    return segments


def test_texts_are_read_back_from_where_append_put_them(tmp_path: Path) -> None:
    segments = opened(tmp_path / "seg")
    texts = [b"first line\n", "é ü\n".encode(), b"third\n"]
    locations = segments.append(texts)
    segments.settle(number for number, _ in locations)
    assert locations == [(1, 0), (1, 11), (1, 11 + len(texts[1]))]
    read = [segments.read(n, at, len(t)) for (n, at), t in zip(locations, texts, strict=True)]
    assert read == texts
    assert names(tmp_path / "seg") == ["00000001.seg"]
    assert (os.stat(tmp_path / "seg" / "00000001.seg").st_mode & 0o777) == 0o600


def test_a_segment_rolls_over_at_its_size_and_a_larger_text_gets_one_alone(
    tmp_path: Path,
) -> None:
    segments = opened(tmp_path / "seg", roll=100)
    locations = segments.append([b"a" * 60, b"b" * 30, b"c" * 30, b"d" * 250, b"e" * 10])
    segments.settle(number for number, _ in locations)
    assert locations == [(1, 0), (1, 60), (2, 0), (3, 0), (4, 0)]
    assert segments.read(3, 0, 250) == b"d" * 250
    assert segments.live_segments == {1: 2, 2: 1, 3: 1, 4: 1}


def test_every_append_is_fdatasynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = segments_module._flush_data

    def recording(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(segments_module, "_flush_data", recording)
    segments = opened(tmp_path / "seg")
    segments.append([b"12345", b"678"])
    assert synced == [8]  # one fdatasync, after the last byte of the call
    segments.append([b"9"])
    assert synced == [8, 9]


def test_an_append_that_rolls_over_makes_the_texts_in_both_segments_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[int, int]] = []
    real = segments_module._flush_data

    def recording(fd: int) -> None:
        status = os.fstat(fd)
        synced.append((status.st_ino, status.st_size))
        real(fd)

    monkeypatch.setattr(segments_module, "_flush_data", recording)
    directory = tmp_path / "seg"
    segments = opened(directory, roll=100)
    segments.append([b"a" * 60, b"b" * 30, b"c" * 50])
    inodes = [os.stat(directory / name).st_ino for name in ("00000001.seg", "00000002.seg")]
    assert synced == [(inodes[0], 90), (inodes[1], 50)]


def test_a_segment_is_deleted_when_its_last_chunk_is_released_and_it_is_not_written(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "seg"
    segments = opened(directory, roll=100)
    first = segments.append([b"a" * 60, b"b" * 30])
    segments.settle(number for number, _ in first)
    second = segments.append([b"c" * 30])  # starts segment 2: 1 is finished
    segments.settle(number for number, _ in second)
    segments.release([1])
    assert names(directory) == ["00000001.seg", "00000002.seg"]  # one chunk left in it
    segments.release([1])
    assert names(directory) == ["00000002.seg"]
    # The active segment stays while it holds less than RECYCLE_BYTES (a spool that
    # drains between appends does not create a file per chunk).
    segments.release([2])
    assert names(directory) == ["00000002.seg"]
    assert segments.append([b"d"]) == [(2, 30)]


def test_the_active_segment_is_recycled_once_empty_and_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments_module, "RECYCLE_BYTES", 50)
    directory = tmp_path / "seg"
    segments = opened(directory, roll=1000)
    locations = segments.append([b"a" * 40, b"b" * 20])
    segments.settle(number for number, _ in locations)
    segments.release([1, 1])
    assert names(directory) == []
    assert segments.append([b"c"]) == [(2, 0)]


def test_a_segment_finished_inside_an_append_waits_for_that_append_to_be_settled(
    tmp_path: Path,
) -> None:
    # Segment 1's chunks are all acknowledged; the next append writes its first text at
    # the end of segment 1 and rolls over to segment 2 for the second. Segment 1 holds a
    # text whose row is not committed yet: it must not be deleted before that commit.
    directory = tmp_path / "seg"
    segments = opened(directory, roll=100)
    earlier = segments.append([b"a" * 50])
    segments.settle(number for number, _ in earlier)
    segments.release([1])
    locations = segments.append([b"b" * 40, b"c" * 40])
    assert locations == [(1, 50), (2, 0)]
    assert names(directory) == ["00000001.seg", "00000002.seg"]
    segments.settle(number for number, _ in locations)
    assert segments.read(1, 50, 40) == b"b" * 40
    segments.release([1])
    assert names(directory) == ["00000002.seg"]
    # A commit that failed: segment 3, finished by the append, holds nothing anybody
    # points at; segment 2 still holds a chunk, and 4 is being written.
    more = segments.append([b"d" * 70, b"e" * 70])
    assert [number for number, _ in more] == [3, 4]
    segments.settle()
    assert names(directory) == ["00000002.seg", "00000004.seg"]


def test_open_deletes_segments_no_chunk_points_into_and_starts_a_new_one(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "seg"
    segments = opened(directory, roll=100)
    locations = segments.append([b"a" * 60, b"b" * 60, b"c" * 60])
    segments.settle(number for number, _ in locations)
    segments.close()
    (directory / "notes.txt").write_text("not a segment")
    # The database says only segment 2 holds waiting chunks.
    again = opened(directory, {2: 1}, roll=100)
    assert names(directory) == ["00000002.seg", "notes.txt"]
    assert again.read(2, 0, 60) == b"b" * 60
    assert again.append([b"d"]) == [(4, 0)]  # never after the texts of a crash


def test_open_refuses_when_a_segment_of_waiting_chunks_is_missing(tmp_path: Path) -> None:
    segments = SegmentFiles(tmp_path / "seg")
    with pytest.raises(SegmentMissing, match=r"00000007\.seg"):
        segments.open({7: 3})


def test_reading_past_the_end_of_a_segment_or_a_missing_one_says_so(tmp_path: Path) -> None:
    segments = opened(tmp_path / "seg")
    segments.settle(number for number, _ in segments.append([b"abc"]))
    with pytest.raises(SegmentMissing, match="ends before"):
        segments.read(1, 1, 10)
    with pytest.raises(SegmentMissing, match="missing"):
        segments.read(9, 0, 1)


def test_a_full_disk_raises_and_the_next_append_writes_over_what_was_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segments = opened(tmp_path / "seg", roll=1000)
    real_write = os.write
    calls = {"n": 0}

    def full_after_some(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            real_write(fd, bytes(data)[:3])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(segments_module, "_write", full_after_some)
    with pytest.raises(OSError, match="No space"):
        segments.append([b"kept", b"cut short"])
    segments.settle()
    monkeypatch.setattr(segments_module, "_write", real_write)
    assert segments.append([b"next"]) == [(1, 4)]
    assert segments.read(1, 4, 4) == b"next"


def test_the_roll_size_follows_the_file_system() -> None:
    assert roll_bytes_for(1 << 40) == ROLL_BYTES
    assert roll_bytes_for(256 * 1024 * 1024) == 16 * 1024 * 1024
    assert roll_bytes_for(4 * 1024 * 1024) == MIN_ROLL_BYTES
