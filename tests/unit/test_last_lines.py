"""``last_lines``: the viewers' recent lines are the last lines of a chunk exactly as
``str.splitlines`` cuts them, found without splitting the whole chunk."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from main_process.status_publication import last_lines

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
