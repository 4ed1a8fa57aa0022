"""What a follower keeps of a file's bytes to fingerprint any offset it may checkpoint.

Owns: the file's head fingerprint (extended while the file is short), and a mirror of
the raw bytes from ``FINGERPRINT_SPAN`` before the chunker's first held byte up to the
last byte read, so that the anchor of every checkpoint (the hash of the bytes before its
offset, see ``file_identity``) is computed without reading the file again; whether the
file still starts with what was read (a truncation or a rewrite of the head otherwise).

Must not: read beyond the head and the span before an offset, or keep more bytes than
later anchors can need (``keep_from``).
"""

from __future__ import annotations

from main_process.sources.file_identity import (
    EMPTY_HEAD,
    FINGERPRINT_SPAN,
    Anchor,
    CheckpointFingerprint,
    HeadFingerprint,
    read_before,
    read_head,
)


class ReadMirror:
    """The head and the recent raw bytes of one followed file; see the module docstring."""

    def __init__(self, head: HeadFingerprint, before_start: bytes, start_offset: int) -> None:
        self.head = head
        self._bytes = bytearray(before_start)
        self._start = start_offset - len(before_start)

    def extend(self, data: bytes) -> None:
        """``data`` was read right after the last byte mirrored."""
        self._bytes += data

    def anchor_at(self, offset: int) -> Anchor:
        start = offset - min(offset, FINGERPRINT_SPAN) - self._start
        end = offset - self._start
        assert start >= 0, "anchor starts before the mirrored bytes"
        assert end <= len(self._bytes), "anchor ends after the mirrored bytes"
        return Anchor.of(bytes(self._bytes[start:end]))

    def fingerprint_at(self, offset: int) -> CheckpointFingerprint:
        return CheckpointFingerprint(self.head, self.anchor_at(offset))

    def keep_from(self, emitted_offset: int) -> None:
        """Keep only what later anchors can need: the span before the first held byte
        (``emitted_offset``)."""
        keep_from = emitted_offset - min(emitted_offset, FINGERPRINT_SPAN)
        if keep_from > self._start:
            del self._bytes[: keep_from - self._start]
            self._start = keep_from

    def same_content(self, fd: int, offset: int) -> bool:
        """Whether the file ``fd`` still starts with the bytes read up to ``offset``: its
        head matches (a short head is extended) and the bytes before ``offset`` are
        unchanged.

        Only called when the size or mtime changed, so the cost (two reads of up to 1 KiB)
        is paid once per batch of new data.
        """
        extended = self.head.extended(read_head(fd))
        if extended is None:
            return False
        if Anchor.of(read_before(fd, offset)) != self.anchor_at(offset):
            return False
        self.head = extended
        return True

    def reset(self) -> None:
        """The file was truncated: nothing of it is known any more."""
        self._bytes = bytearray()
        self._start = 0
        self.head = EMPTY_HEAD
