"""``RecentChunks``: chunks sent straight from memory are exactly what the spool's file
holds, whatever the order of appends, acknowledgements, dead letters and restarts, and
with a copy so small that most chunks do not fit in it."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from main_process.spool.chunks import NewChunk, Spool, SpooledChunk
from main_process.spool.recent_chunks import RecentChunks

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(1, 40), min_size=1, max_size=4)),
        st.tuples(st.just("ack"), st.integers(0, 12)),
        st.tuples(st.just("dead"), st.integers(0, 12)),
        st.tuples(st.just("reopen"), st.just(0)),
        st.tuples(st.just("pending"), st.tuples(st.integers(-1, 14), st.integers(-1, 6))),
    ),
    max_size=40,
)


def from_file(path: Path, after: int, limit: int) -> list[tuple[int, str]]:
    """What the files themselves answer: the rows, read by another connection, and the
    texts at the places in the segment files the rows point at."""
    with sqlite3.connect(path) as reader:
        rows = reader.execute(
            "SELECT seq, text, byte_len, segment, segment_offset FROM chunks"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
    answers = []
    for seq, text, byte_len, segment, offset in rows:
        if segment is not None:
            with open(path.with_name(f"{path.name}-segments") / f"{segment:08d}.seg", "rb") as f:
                f.seek(offset)
                text = f.read(byte_len).decode()
        answers.append((int(seq), str(text)))
    return answers


@settings(max_examples=150, deadline=None)
@given(operations)
def test_pending_from_memory_is_what_the_file_holds(steps: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "spool.sqlite3"

        def open_spool() -> Spool:
            # 100 bytes: a chunk or three fit, most do not.
            return Spool(path, "client", verify=False, recent_max_bytes=100)

        spool = open_spool()
        written = 0
        try:
            for kind, argument in steps:
                if kind == "append":
                    assert isinstance(argument, list)
                    texts = [
                        f"{written + n:06d}".ljust(size, "x") for n, size in enumerate(argument)
                    ]
                    written += len(texts)
                    spool.append_many([NewChunk(text) for text in texts])
                elif kind == "ack":
                    assert isinstance(argument, int)
                    spool.acknowledge(argument)
                elif kind == "dead":
                    assert isinstance(argument, int)
                    spool.dead_letter(argument, "invalid")
                elif kind == "reopen":
                    spool.close()
                    spool = open_spool()
                else:
                    assert isinstance(argument, tuple)
                    after, limit = argument
                    answer = [(c.seq, c.text) for c in spool.pending(after, limit)]
                    assert answer == from_file(path, after, limit)
            for after in range(-1, written + 1):
                for limit in (-1, 1, 3):
                    answer = [(c.seq, c.text) for c in spool.pending(after, limit)]
                    assert answer == from_file(path, after, limit), (after, limit)
        finally:
            spool.close()


def chunk(seq: int, size: int) -> SpooledChunk:
    return SpooledChunk(seq, f"c:{seq}", "x" * size, None, size, 0.0)


def test_only_seqs_at_or_above_complete_from_are_answered_from_memory() -> None:
    recent = RecentChunks(complete_from=5, max_bytes=10)
    assert recent.pending(3, 8) is None  # seq 4 may be in the file, not here
    recent.appended(chunk(5, 4))
    recent.appended(chunk(6, 4))
    assert [c.seq for c in recent.pending(4, 8) or []] == [5, 6]
    recent.appended(chunk(7, 4))  # over 10 bytes: not held
    assert recent.complete_from == 8
    assert recent.pending(4, 8) is None
    recent.appended(chunk(8, 2))
    assert [c.seq for c in recent.pending(7, 8) or []] == [8]
    recent.removed(5)
    recent.removed(6)
    assert (len(recent), recent.held_bytes) == (1, 2)
