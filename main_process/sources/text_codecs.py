"""The encodings a log file may be written in, as the line chunker needs them.

Owns: per encoding, where a line ends in raw bytes, where bytes may be cut without
splitting a character, how many trailing bytes may still be completed by the writer, and
decoding with U+FFFD for invalid input and an exact count of replacements. Chunks always
travel as UTF-8 text; offsets (checkpoints) stay raw file bytes.

- ``utf-8`` (the default): cuts after a newline, or between sequences inside an over-long
  line (see ``line_chunker``'s theory).
- ``latin-1`` (ISO 8859-1) and ``cp1252`` (Windows' Western European code page): one byte
  a character, so any byte boundary is a cut; cp1252's five undefined bytes become U+FFFD.
- ``utf-16-le``, ``utf-16-be``, and ``utf-16``: two-byte code units, a newline is the unit
  ``000A``, cuts fall between units and never between the two halves of a surrogate
  pair; a lone surrogate becomes U+FFFD. ``utf-16`` takes the byte order from the file's
  byte-order mark (``FF FE`` little-endian, ``FE FF`` big-endian; little-endian without
  one, as Windows writes), decided by the follower (``for_file``), and the mark itself is
  not part of the text.

Must not: read files or keep state: every function looks at the bytes it is given.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final

_REPLACEMENT_CHARACTER_UTF8 = "\ufffd".encode()
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
BYTE_ORDER_MARKS: Final = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}
ENCODINGS: Final = ("utf-8", "latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be")


class LineCodec:
    """UTF-8; the base of the others (which override what differs)."""

    name = "utf-8"
    same_size_as_utf8 = True
    """Valid input decodes to text of exactly its own size in UTF-8."""
    byte_order_mark = b""

    def last_line_end(self, buffer: bytearray, start: int, end: int) -> int:
        """Index just past the last newline within ``buffer[start:end]``; 0 when none."""
        return buffer.rfind(b"\n", start, end) + 1

    def boundary_at_or_before(self, buffer: bytearray, limit: int) -> int:
        """A cut position in ``[1, limit]`` (``limit >= 4``) that splits no character.

        Decoding starts at the last non-continuation byte before ``limit`` (always the
        start of a sequence) and stops before a trailing incomplete sequence, which is
        where the whole-stream decoder is between two sequences too.
        """
        for start in range(limit - 1, limit - 5, -1):
            if not _is_continuation(buffer[start]):
                _, consumed = codecs.utf_8_decode(bytes(buffer[start:limit]), "replace", False)
                # An incomplete sequence has at most 3 bytes: with limit >= 4 this is >= 1.
                return start + consumed
        # Four continuation bytes in a row: no lead byte can claim buffer[limit - 1], so
        # it was a stray byte (its own U+FFFD) and the decoder is between sequences.
        return limit

    def incomplete_tail(self, buffer: bytearray) -> int:
        """Length of a trailing sequence the writer may still complete (0 to 3 bytes)."""
        size = len(buffer)
        for back in range(1, min(3, size) + 1):
            byte = buffer[size - back]
            if byte < 0x80:
                return 0
            if not _is_continuation(byte):
                try:
                    _, consumed = codecs.utf_8_decode(bytes(buffer[size - back :]), "strict", False)
                except UnicodeDecodeError:
                    return 0
                return back - consumed
        return 0

    def decode(self, data: bytes) -> tuple[str, int]:
        """The text, with U+FFFD for invalid input, and how many were replaced."""
        return decode_utf8(data)


class SingleByteCodec(LineCodec):
    """latin-1, cp1252: a byte is a character."""

    same_size_as_utf8 = False

    def __init__(self, name: str) -> None:
        self.name = name

    def boundary_at_or_before(self, buffer: bytearray, limit: int) -> int:
        return limit

    def incomplete_tail(self, buffer: bytearray) -> int:
        return 0

    def decode(self, data: bytes) -> tuple[str, int]:
        # No byte of these code pages decodes to U+FFFD: each one is a replacement.
        text = data.decode(self.name, "replace")
        return text, text.count("\ufffd")


class Utf16Codec(LineCodec):
    """UTF-16 in one byte order."""

    same_size_as_utf8 = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._little = name == "utf-16-le"
        self._newline = b"\n\x00" if self._little else b"\x00\n"
        self.byte_order_mark = b"\xff\xfe" if self._little else b"\xfe\xff"

    def last_line_end(self, buffer: bytearray, start: int, end: int) -> int:
        found = buffer.rfind(self._newline, start, end)
        while found >= 0 and found % 2:
            # A match across two units (the second byte of one, the first of the next).
            found = buffer.rfind(self._newline, start, found + 1)
        return found + 2 if found >= 0 else 0

    def boundary_at_or_before(self, buffer: bytearray, limit: int) -> int:
        cut = limit - limit % 2
        if cut >= 2 and self._is_high_surrogate(buffer, cut - 2):
            cut -= 2  # keep a surrogate pair together
        return max(cut, 2)

    def incomplete_tail(self, buffer: bytearray) -> int:
        size = len(buffer)
        odd = size % 2
        whole = size - odd
        if whole >= 2 and self._is_high_surrogate(buffer, whole - 2):
            return odd + 2
        return odd

    def decode(self, data: bytes) -> tuple[str, int]:
        stray = len(data) % 2  # only at the end of a file that ends mid-unit
        text = data[: len(data) - stray].decode(self.name, "surrogatepass")
        text, replaced = _LONE_SURROGATE.subn("\ufffd", text)
        if stray:
            text += "\ufffd"
            replaced += 1
        return text, replaced

    def _is_high_surrogate(self, buffer: bytearray, index: int) -> bool:
        high = buffer[index + 1] if self._little else buffer[index]
        return 0xD8 <= high <= 0xDB


UTF8: Final = LineCodec()


@dataclass(frozen=True, slots=True)
class FileEncoding:
    """What a source is set to (``encoding``), before a file's byte-order mark is seen."""

    name: str = "utf-8"

    def for_file(self, head: bytes) -> LineCodec:
        """The codec of a file whose first bytes are ``head`` (``utf-16``: by its mark)."""
        name = self.name
        if name == "utf-16":
            name = BYTE_ORDER_MARKS.get(bytes(head[:2]), "utf-16-le")
        return codec(name)

    @property
    def needs_head(self) -> bool:
        """Whether the codec depends on the file's first bytes."""
        return self.name == "utf-16"


DEFAULT_ENCODING: Final = FileEncoding()


def codec(name: str) -> LineCodec:
    normalized = normalize(name)
    if normalized == "utf-8":
        return UTF8
    if normalized in ("utf-16-le", "utf-16-be"):
        return Utf16Codec(normalized)
    if normalized in ("latin-1", "cp1252"):
        return SingleByteCodec(normalized)
    raise ValueError(f"unknown encoding {name!r}")


def normalize(name: str) -> str:
    """The name used here for an encoding name Python knows (``UTF8`` → ``utf-8``,
    ``iso-8859-1`` → ``latin-1``, ``windows-1252`` → ``cp1252``); ``ValueError`` for one
    that is not supported."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None
    aliases = {
        "utf-8": "utf-8",
        "iso8859-1": "latin-1",
        "latin-1": "latin-1",
        "cp1252": "cp1252",
        "utf-16": "utf-16",
        "utf-16-le": "utf-16-le",
        "utf-16-be": "utf-16-be",
    }
    if canonical not in aliases:
        raise ValueError(f"encoding {name!r} is not supported (supported: {', '.join(ENCODINGS)})")
    return aliases[canonical]


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Decode with U+FFFD for invalid bytes; return the text and how many were replaced."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", "replace")
    # Every replacement adds one U+FFFD. A genuine U+FFFD in the input is the byte run
    # EF BF BD, which always decodes as itself (EF cannot continue another sequence).
    replaced = text.count("\ufffd") - data.count(_REPLACEMENT_CHARACTER_UTF8)
    return text, replaced


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF
