"""Cut the bytes read from one file into chunks of whole lines of text.

Owns: grouping lines into chunks (up to ``max_chunk_bytes`` of UTF-8; at once while the
caller says a chunk would go out at once, else after ``linger`` seconds), holding a partial last line until its newline
or until it has been idle for ``partial_line_linger`` seconds, splitting a single line that
is over the limit on a character boundary, decoding (UTF-8 by default, or the file's
encoding: ``text_codecs``; invalid bytes become U+FFFD and are counted), and the file
offsets each chunk covers. The theory below is told for UTF-8; the other encodings keep it
with their own newline and character boundaries.

Must not: read files, look at a clock, or know about the spool. The caller feeds bytes
with the file offset they start at and the current time, calls ``poll`` when
``next_deadline()`` passes, and stores each chunk with ``end_offset`` as its checkpoint.
Like h11's ``Connection``, this is a plain object fed events and a clock, so every timing
rule is a deterministic unit test.

Theory of operation
-------------------
Undecoded bytes wait in one buffer that starts at file offset ``emitted_offset``. Bytes are
decoded only when a chunk is cut, and a chunk is only ever cut where decoding the two
halves separately gives the same text as decoding them together:

- after a newline (0x0A never occurs inside a multi-byte sequence), or
- inside an over-long line, where an incremental decoder started at a known sequence
  start (any byte that is not a continuation byte 0x80-0xBF) stops between sequences.

So a character split across two reads is never broken, the concatenation of all chunk
texts equals ``input.decode("utf-8", "replace")``, and the invalid-byte count is exact.

When a partial line goes idle, an incomplete multi-byte sequence at its very end (at most
three bytes that may still be completed by the writer) stays behind; ``flush`` emits it.

Chunk size is measured as the UTF-8 length of the decoded text (what travels), which for
valid input equals the raw length. Each invalid byte grows into a 3-byte U+FFFD, so a
chunk whose text would be over the limit is cut shorter.

The rules, in order, applied after every ``feed`` and ``poll``:

1. Size: while more than ``max_chunk_bytes`` raw bytes are held, the first chunk is
   final: the complete lines within the first ``max_chunk_bytes`` bytes, or, when the
   first line alone is longer, its first ``max_chunk_bytes`` bytes (character boundary).
2. Send now, else linger: complete lines are emitted at once when the caller says
   ``send_now`` (the delivery has room: a chunk cut now is sent now, so waiting would
   only add latency; ``ConnectionState.has_delivery_room`` decides), else once they have
   been held for ``linger`` seconds (counted from when the oldest of them arrived).
   While the delivery is busy, lines group into fewer, larger chunks, and the caller
   polls again with ``send_now`` when an acknowledgement frees room: batching that
   adapts to the load instead of a fixed wait.
3. Idle partial line: when no byte has arrived for ``partial_line_linger`` seconds,
   everything held is emitted, the partial line included (minus an incomplete sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

from main_process.sources.text_codecs import UTF8, LineCodec

DEFAULT_MAX_CHUNK_BYTES = 512 * 1024
# The longest lines wait to be grouped while the delivery is busy (with room they leave
# at once): a delivery that stays busy (a slow server, no connection) never holds a line
# longer than this.
DEFAULT_LINGER = 0.05
DEFAULT_PARTIAL_LINE_LINGER = 1.0

# Any 4 raw bytes (one character, or up to four U+FFFD of 3 bytes) must fit in a chunk,
# so that cutting a chunk shorter always ends.
_MIN_MAX_CHUNK_BYTES = 16
_MIN_CUT_SEARCH = 4


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Decoded text and the file bytes ``[start_offset, end_offset)`` it came from."""

    text: str
    start_offset: int
    end_offset: int

    @property
    def raw_length(self) -> int:
        """Number of file bytes the chunk covers (differs from the text size on bad bytes)."""
        return self.end_offset - self.start_offset


class LineChunker:
    """Turns the bytes of one file into ``TextChunk``s; see the module docstring."""

    def __init__(
        self,
        start_offset: int = 0,
        *,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        linger: float = DEFAULT_LINGER,
        partial_line_linger: float = DEFAULT_PARTIAL_LINE_LINGER,
        codec: LineCodec = UTF8,
    ) -> None:
        if max_chunk_bytes < _MIN_MAX_CHUNK_BYTES:
            raise ValueError(f"max_chunk_bytes must be at least {_MIN_MAX_CHUNK_BYTES}")
        if start_offset < 0:
            raise ValueError("start_offset must not be negative")
        self._max = max_chunk_bytes
        self._codec = codec
        self._linger = linger
        self._partial_linger = partial_line_linger
        self._buffer = bytearray()
        self._buffer_offset = start_offset
        # Length of the buffer's prefix that ends with a newline (0: no complete line).
        self._complete_length = 0
        self._complete_since = 0.0
        self._last_data_at = 0.0
        self.invalid_bytes_replaced = 0
        """Number of U+FFFD substitutions in the chunks emitted so far."""

    @property
    def max_chunk_bytes(self) -> int:
        return self._max

    @property
    def emitted_offset(self) -> int:
        """File offset just after the last emitted chunk: where a restart resumes."""
        return self._buffer_offset

    @property
    def next_offset(self) -> int:
        """File offset the next ``feed`` must start at."""
        return self._buffer_offset + len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not emitted yet."""
        return len(self._buffer)

    def feed(
        self, data: bytes, offset: int, now: float, *, send_now: bool = False
    ) -> list[TextChunk]:
        """Add bytes read at file ``offset``; return the chunks that are ready at ``now``
        (every complete line with ``send_now``; see rule 2).

        Raises ``ValueError`` when ``offset`` is not ``next_offset``: after a truncation or
        a seek the caller starts a new chunker (and decides what to do with the old one).
        """
        if offset != self.next_offset:
            raise ValueError(f"expected bytes at offset {self.next_offset}, got {offset}")
        if data:
            previous_length = len(self._buffer)
            self._buffer += data
            # From one byte back: a two-byte newline may straddle two reads.
            line_end = self._codec.last_line_end(
                self._buffer, max(0, previous_length - 1), len(self._buffer)
            )
            if line_end > self._complete_length:
                if self._complete_length == 0:
                    self._complete_since = now
                self._complete_length = line_end
            self._last_data_at = now
        return self._drain(now, send_now)

    def poll(self, now: float, *, send_now: bool = False) -> list[TextChunk]:
        """Return the chunks whose linger or idle time has passed at ``now`` (every
        complete line with ``send_now``)."""
        return self._drain(now, send_now)

    def flush(self) -> list[TextChunk]:
        """Emit everything held, partial line and incomplete character included.

        For the end of a file that will not grow again (rotated away, deleted).
        """
        chunks: list[TextChunk] = []
        self._emit_through(len(self._buffer), chunks)
        return chunks

    def flush_lines(self) -> list[TextChunk]:
        """Emit every complete line held now, without waiting for the linger; a partial
        last line stays. For a file whose newer generation already has lines."""
        chunks: list[TextChunk] = []
        self._emit_through(self._complete_length, chunks)
        return chunks

    @property
    def holds_lines(self) -> bool:
        """Whether complete lines wait (for room to send, or for the linger)."""
        return self._complete_length > 0

    def next_deadline(self) -> float | None:
        """When ``poll`` next has something to do, or None while only waiting for bytes."""
        deadline: float | None = None
        if self._complete_length > 0:
            deadline = self._complete_since + self._linger
        if self._idle_emittable_length() > self._complete_length:
            idle_deadline = self._last_data_at + self._partial_linger
            deadline = idle_deadline if deadline is None else min(deadline, idle_deadline)
        return deadline

    # ------------------------------------------------------------------------ internals

    def _idle_emittable_length(self) -> int:
        return len(self._buffer) - self._codec.incomplete_tail(self._buffer)

    def _drain(self, now: float, send_now: bool = False) -> list[TextChunk]:
        chunks: list[TextChunk] = []
        buffer = self._buffer
        while len(buffer) > self._max:
            cut = self._codec.last_line_end(buffer, 0, self._max)
            if cut == 0:
                cut = self._codec.boundary_at_or_before(buffer, self._max)
            chunks.append(self._emit_prefix(cut))
        if self._complete_length > 0 and (send_now or now >= self._complete_since + self._linger):
            self._emit_through(self._complete_length, chunks)
        if len(buffer) > self._complete_length and now >= self._last_data_at + self._partial_linger:
            self._emit_through(self._idle_emittable_length(), chunks)
        return chunks

    def _emit_through(self, end: int, chunks: list[TextChunk]) -> None:
        """Emit the first ``end`` buffered bytes, in as many chunks as the limit requires."""
        while end > 0:
            chunk = self._emit_prefix(end)
            chunks.append(chunk)
            end -= chunk.raw_length

    def _emit_prefix(self, cut: int) -> TextChunk:
        """Emit the first ``cut`` buffered bytes, or fewer if their text is over the limit."""
        buffer = self._buffer
        while True:
            text, replaced = self._codec.decode(bytes(buffer[:cut]))
            # Valid UTF-8 re-encodes to exactly its own length.
            same = self._codec.same_size_as_utf8 and not replaced
            size = cut if same else len(text.encode("utf-8"))
            if size <= self._max:
                break
            # Removing k raw bytes shrinks the text by k to 3k bytes; retry until it fits,
            # preferring a line boundary, else a character boundary.
            limit = max(_MIN_CUT_SEARCH, min(cut - 1, cut - (size - self._max + 2) // 3))
            cut = self._codec.last_line_end(buffer, 0, limit) or self._codec.boundary_at_or_before(
                buffer, limit
            )
        if self._buffer_offset == 0 and self._codec.byte_order_mark:
            # The byte-order mark at the start of the file says how to read it; it is not
            # part of the log (it decodes to U+FEFF).
            text = text.removeprefix("\ufeff")
        chunk = TextChunk(text, self._buffer_offset, self._buffer_offset + cut)
        del buffer[:cut]
        self._buffer_offset += cut
        # Complete lines left behind keep the arrival time of the oldest line that was
        # held: they may leave a little before their own linger, never after it.
        self._complete_length = max(0, self._complete_length - cut)
        self.invalid_bytes_replaced += replaced
        return chunk
