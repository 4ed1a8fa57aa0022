"""``last_lines``: the viewers' recent lines are the last lines of a chunk exactly as
``str.splitlines`` cuts them, found without splitting the whole chunk; ``RecentLines``
splits only the chunks whose lines are still the last when they are published."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from ipc.messages import LogLine
from main_process.status_publication import RECENT_LINES_PER_PUBLISH, RecentLines, last_lines

# Every separator splitlines knows, and text around them.
pieces = st.lists(
    st.sampled_from(["a", "bc", "\n", "\r", "\r\n", "\x0b", "\x85", "\u2028", "é", ""]),
    max_size=60,
)


@given(pieces, st.integers(min_value=1, max_value=12))
def test_last_lines_are_the_last_of_splitlines(parts: list[str], count: int) -> None:
    text = "".join(parts)
    assert last_lines(text, count) == text.splitlines()[-count:]


def test_a_large_chunk_gives_only_its_last_lines() -> None:
    text = "".join(f"line {n}\n" for n in range(100_000))
    assert last_lines(text, 3) == ["line 99997", "line 99998", "line 99999"]
    assert last_lines(text, 0) == []


def eager_recent_lines(chunks: list[tuple[str, str]]) -> tuple[LogLine, ...]:
    """What the viewers were sent when every chunk was split as it arrived."""
    recent: deque[LogLine] = deque(maxlen=RECENT_LINES_PER_PUBLISH)
    for path, text in chunks:
        for line in last_lines(text, RECENT_LINES_PER_PUBLISH):
            recent.append(LogLine(path=path, text=line))
    return tuple(recent)


# Chunks of a few lines, and chunks of hundreds (more lines than a publication holds).
chunk_texts = st.one_of(
    pieces.map("".join),
    st.tuples(st.integers(min_value=0, max_value=1200), st.sampled_from(["x", "", "é\r"])).map(
        lambda spec: "".join(f"{n}{spec[1]}\n" for n in range(spec[0]))
    ),
)


@given(st.lists(st.lists(st.tuples(st.sampled_from(["a.log", "b.log"]), chunk_texts), max_size=30)))
def test_recent_lines_split_late_are_those_split_at_once(
    rounds: list[list[tuple[str, str]]],
) -> None:
    recent = RecentLines()
    for chunks in rounds:
        for path, text in chunks:
            recent.add(path, text)
        assert bool(recent) == bool(eager_recent_lines(chunks))
        assert recent.take() == eager_recent_lines(chunks)
        assert not recent
