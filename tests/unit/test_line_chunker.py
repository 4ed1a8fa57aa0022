"""LineChunker: size, linger and idle rules with a fake clock, and stream properties."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from main_process.sources.line_chunker import LineChunker, TextChunk
from main_process.sources.text_codecs import decode_utf8

# ----------------------------------------------------------------------------- helpers


def texts(chunks: list[TextChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


def reference_replacements(data: bytes) -> int:
    """Count decoding errors independently of the implementation under test."""
    count = 0

    def handler(error: UnicodeError) -> tuple[str, int]:
        nonlocal count
        assert isinstance(error, UnicodeDecodeError)
        count += 1
        return ("\ufffd", error.end)

    codecs.register_error("test_line_chunker_count", handler)
    data.decode("utf-8", "test_line_chunker_count")
    return count


# ------------------------------------------------------------------------ size limits


def test_lines_are_held_until_the_linger_then_emitted_together() -> None:
    chunker = LineChunker(max_chunk_bytes=1024, linger=0.2)
    assert chunker.feed(b"one\n", 0, now=10.0) == []
    assert chunker.feed(b"two\n", 4, now=10.1) == []
    assert chunker.next_deadline() == pytest.approx(10.2)
    assert chunker.poll(10.19) == []
    assert chunker.poll(10.2) == [TextChunk("one\ntwo\n", 0, 8)]
    assert chunker.next_deadline() is None
    assert chunker.emitted_offset == 8


def test_a_chunk_is_emitted_at_once_when_the_next_line_cannot_fit() -> None:
    chunker = LineChunker(max_chunk_bytes=16, linger=100.0)
    # 10 + 10 bytes: the second line does not fit with the first, so the first is final.
    chunks = chunker.feed(b"aaaaaaaaa\nbbbbbbbbb\n", 0, now=0.0)
    assert chunks == [TextChunk("aaaaaaaaa\n", 0, 10)]
    assert chunker.buffered_bytes == 10


def test_a_chunk_exactly_at_the_limit_is_not_split() -> None:
    chunker = LineChunker(max_chunk_bytes=16, linger=100.0)
    chunks = chunker.feed(b"a" * 15 + b"\n" + b"b", 0, now=0.0)
    assert chunks == [TextChunk("a" * 15 + "\n", 0, 16)]


def test_many_lines_in_one_read_fill_chunks_up_to_the_limit() -> None:
    chunker = LineChunker(max_chunk_bytes=20, linger=100.0)
    data = b"".join(b"line%02d\n" % i for i in range(10))  # 7 bytes each
    chunks = chunker.feed(data, 0, now=0.0) + chunker.flush()
    assert [len(chunk.text) for chunk in chunks] == [14, 14, 14, 14, 14]
    assert texts(chunks) == data.decode()


def test_an_over_long_line_is_split_on_a_character_boundary() -> None:
    chunker = LineChunker(max_chunk_bytes=16, linger=100.0, partial_line_linger=100.0)
    line = "é" * 20 + "\n"  # 2-byte characters: 16 is a boundary, 17 would not be
    data = line.encode()
    chunks = chunker.feed(data[:17], 0, now=0.0)
    assert chunks == [TextChunk("é" * 8, 0, 16)]
    chunks += chunker.feed(data[17:], 17, now=0.0) + chunker.flush()
    assert texts(chunks) == line
    assert all(len(chunk.text.encode()) <= 16 for chunk in chunks)
    assert chunker.invalid_bytes_replaced == 0


def test_an_over_long_line_of_four_byte_characters_is_split_between_characters() -> None:
    chunker = LineChunker(max_chunk_bytes=18, linger=100.0, partial_line_linger=100.0)
    data = ("𝄞" * 10).encode()  # 4 bytes each; 18 falls inside the fifth character
    chunks = chunker.feed(data, 0, now=0.0)
    assert chunks[0] == TextChunk("𝄞" * 4, 0, 16)
    assert texts(chunks + chunker.flush()) == "𝄞" * 10


def test_invalid_bytes_that_grow_into_replacement_characters_still_respect_the_limit() -> None:
    chunker = LineChunker(max_chunk_bytes=16, linger=0.0)
    data = b"\xff" * 15 + b"\n"  # 16 raw bytes, but 15 * 3 + 1 = 46 bytes of text
    chunks = chunker.feed(data, 0, now=0.0)
    assert texts(chunks) == "\ufffd" * 15 + "\n"
    assert all(len(chunk.text.encode()) <= 16 for chunk in chunks)
    assert chunker.invalid_bytes_replaced == 15
    assert [c.start_offset for c in chunks[1:]] == [c.end_offset for c in chunks[:-1]]


def test_max_chunk_bytes_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        LineChunker(max_chunk_bytes=8)


# ---------------------------------------------------------------------- partial lines


def test_a_partial_line_waits_for_its_newline() -> None:
    chunker = LineChunker(linger=0.2, partial_line_linger=1.0)
    assert chunker.feed(b"hello wo", 0, now=0.0) == []
    assert chunker.poll(0.9) == []
    assert chunker.feed(b"rld\n", 8, now=0.9) == []
    assert chunker.poll(1.1) == [TextChunk("hello world\n", 0, 12)]


def test_a_partial_line_is_emitted_after_being_idle_and_new_data_restarts_the_idle_time() -> None:
    chunker = LineChunker(linger=0.2, partial_line_linger=1.0)
    chunker.feed(b"abc", 0, now=0.0)
    assert chunker.next_deadline() == pytest.approx(1.0)
    chunker.feed(b"def", 3, now=0.5)
    assert chunker.next_deadline() == pytest.approx(1.5)
    assert chunker.poll(1.4) == []
    assert chunker.poll(1.5) == [TextChunk("abcdef", 0, 6)]
    assert chunker.next_deadline() is None
    # The rest of the line arrives later and continues where the chunk ended.
    chunker.feed(b"ghi\n", 6, now=3.0)
    assert chunker.poll(3.2) == [TextChunk("ghi\n", 6, 10)]


def test_complete_lines_go_at_their_linger_while_the_partial_line_stays() -> None:
    chunker = LineChunker(linger=0.2, partial_line_linger=1.0)
    chunker.feed(b"done\npart", 0, now=0.0)
    assert chunker.poll(0.2) == [TextChunk("done\n", 0, 5)]
    assert chunker.next_deadline() == pytest.approx(1.0)
    assert chunker.poll(1.0) == [TextChunk("part", 5, 9)]


def test_an_idle_partial_line_keeps_an_incomplete_character_back() -> None:
    chunker = LineChunker(partial_line_linger=1.0)
    euro = "€".encode()
    chunker.feed(b"price " + euro[:2], 0, now=0.0)
    assert chunker.poll(1.0) == [TextChunk("price ", 0, 6)]
    # Nothing left that idling could emit: no busy timer on the two held bytes.
    assert chunker.next_deadline() is None
    chunker.feed(euro[2:] + b"\n", 8, now=5.0)
    assert chunker.poll(5.2) == [TextChunk("€\n", 6, 10)]
    assert chunker.invalid_bytes_replaced == 0


def test_flush_emits_everything_including_an_incomplete_character() -> None:
    chunker = LineChunker()
    chunker.feed(b"tail\xe2\x82", 0, now=0.0)
    assert chunker.flush() == [TextChunk("tail\ufffd", 0, 6)]
    assert chunker.invalid_bytes_replaced == 1
    assert chunker.flush() == []


# ------------------------------------------------------------------ decoding and offsets


def test_a_character_split_across_reads_is_not_counted_as_invalid() -> None:
    chunker = LineChunker(linger=0.0)
    data = "naïve café\n".encode()
    chunks: list[TextChunk] = []
    for offset in range(len(data)):
        chunks += chunker.feed(data[offset : offset + 1], offset, now=0.0)
    assert texts(chunks) == "naïve café\n"
    assert chunker.invalid_bytes_replaced == 0


def test_invalid_bytes_become_replacement_characters_and_are_counted() -> None:
    chunker = LineChunker(linger=0.0)
    chunks = chunker.feed(b"ok \xff\xfe bad \xe2\x28\xa1\n", 0, now=0.0)
    assert texts(chunks) == "ok \ufffd\ufffd bad \ufffd(\ufffd\n"
    assert chunker.invalid_bytes_replaced == 4


def test_a_genuine_replacement_character_is_not_counted_as_invalid() -> None:
    assert decode_utf8("a\ufffdb".encode()) == ("a\ufffdb", 0)
    assert decode_utf8(b"\xff\xef\xbf\xbd") == ("\ufffd\ufffd", 1)


def test_a_feed_at_the_wrong_offset_is_refused() -> None:
    chunker = LineChunker(start_offset=100)
    chunker.feed(b"abc", 100, now=0.0)
    with pytest.raises(ValueError, match="offset 103"):
        chunker.feed(b"def", 200, now=0.0)


def test_offsets_start_at_the_resume_point() -> None:
    chunker = LineChunker(start_offset=4096, linger=0.0)
    assert chunker.feed(b"x\n", 4096, now=0.0) == [TextChunk("x\n", 4096, 4098)]
    assert chunker.emitted_offset == 4098
    assert chunker.next_offset == 4098


# --------------------------------------------------------------------------- properties

# Pieces that exercise every path: ASCII, multi-byte characters, newlines, long runs,
# invalid bytes, genuine U+FFFD, and lone lead and continuation bytes.
_PIECES = st.one_of(
    st.text(max_size=12).map(lambda s: s.encode()),
    st.sampled_from(
        [b"\n", b"\n\n", b"\xe2\x82\xac", b"\xf0\x9d\x84\x9e", b"\xef\xbf\xbd", b"\xff", b"\xc3"]
    ),
    st.sampled_from([b"\x80", b"\xe2\x82", b"\xf0\x9f", b"\xed\xa0\x80", b"\xc0\xaf"]),
    st.binary(max_size=8),
    st.integers(min_value=10, max_value=80).map(lambda n: b"y" * n),
)


@dataclass
class Feed:
    split_at: int
    advance: float


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Feed], int]:
    data = b"".join(draw(st.lists(_PIECES, max_size=40)))
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    advances = draw(
        st.lists(
            # Binary fractions, so that sums of time steps are exact.
            st.sampled_from([0.0, 0.0625, 0.25, 0.5, 1.0, 3.0]),
            min_size=len(points) + 1,
            max_size=len(points) + 1,
        )
    )
    feeds = [Feed(p, a) for p, a in zip([*points, len(data)], advances, strict=True)]
    max_chunk_bytes = draw(st.sampled_from([16, 17, 24, 64, 1024]))
    return data, feeds, max_chunk_bytes


def _line_containing(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start : len(text) if end < 0 else end + 1]


@settings(max_examples=600, deadline=None)
@given(streams())
def test_any_split_of_any_stream_gives_back_the_decoded_stream(
    stream: tuple[bytes, list[Feed], int],
) -> None:
    data, feeds, limit = stream
    chunker = LineChunker(
        start_offset=7, max_chunk_bytes=limit, linger=0.25, partial_line_linger=1.0
    )
    emitted: list[tuple[TextChunk, bool]] = []  # (chunk, could the idle rule emit it)
    now = 0.0
    last_data_at = 0.0
    previous = 0
    for feed in feeds:
        now += feed.advance
        # A poll before the feed, as the shell's timer would do.
        idle = now >= last_data_at + 1.0
        emitted += [(chunk, idle) for chunk in chunker.poll(now)]
        piece = data[previous : feed.split_at]
        emitted += [(chunk, idle) for chunk in chunker.feed(piece, 7 + previous, now)]
        if piece:
            last_data_at = now
        previous = feed.split_at
    emitted += [(chunk, True) for chunk in chunker.flush()]

    chunks = [chunk for chunk, _ in emitted]
    expected = data.decode("utf-8", "replace")
    assert texts(chunks) == expected
    assert chunker.invalid_bytes_replaced == reference_replacements(data)
    assert chunker.buffered_bytes == 0
    position = 7
    for chunk in chunks:
        assert chunk.start_offset == position
        assert chunk.end_offset > chunk.start_offset
        position = chunk.end_offset
    assert position == 7 + len(data)

    text_position = 0
    for chunk, idle in emitted:
        assert len(chunk.text.encode()) <= limit
        text_position += len(chunk.text)
        if not chunk.text.endswith("\n") and not idle:
            # Cut inside a line: only allowed when that line alone is over the limit.
            line = _line_containing(expected, text_position - 1)
            assert len(line.encode()) > limit, (chunk, line)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=16, max_value=40))
def test_random_bytes_fed_whole_never_produce_an_oversized_chunk(data: bytes, limit: int) -> None:
    chunker = LineChunker(max_chunk_bytes=limit, linger=0.0, partial_line_linger=0.0)
    chunks = chunker.feed(data, 0, now=0.0) + chunker.flush()
    assert texts(chunks) == data.decode("utf-8", "replace")
    assert all(len(chunk.text.encode()) <= limit for chunk in chunks)


def test_a_ten_megabyte_line_streams_out_in_limit_sized_chunks() -> None:
    chunker = LineChunker(partial_line_linger=100.0)
    line = ("ab€" * 2_100_000).encode() + b"\n"  # ~10.5 MB, 3-byte characters inside
    chunks: list[TextChunk] = []
    for offset in range(0, len(line), 65536):
        chunks += chunker.feed(line[offset : offset + 65536], offset, now=0.0)
        assert chunker.buffered_bytes <= chunker.max_chunk_bytes + 65536
    chunks += chunker.poll(1.0)
    assert texts(chunks) == line.decode()
    assert all(len(chunk.text.encode()) <= 512 * 1024 for chunk in chunks)
    assert all(len(chunk.text.encode()) > 512 * 1024 - 4 for chunk in chunks[:-1])
