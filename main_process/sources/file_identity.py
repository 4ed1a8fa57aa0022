"""How a log file is recognised: its (device, inode), and fingerprints of its bytes.

Owns: ``FileKey`` (device and inode, the checkpoint key ``"dev:ino"``), ``HeadFingerprint``
(a hash of the first bytes, extended while the file is shorter than the span), ``Anchor``
(a hash of the bytes just before an offset), the fingerprint blob stored with every
checkpoint (head + anchor), ``describes`` (does a stored checkpoint still describe this
open file?) and the content key that remembers a finished backlog file across renames.

Must not: keep files open, decide what to read, or touch the spool. Every function here
takes an open descriptor and returns a value; the follower and the source set act on it.

Theory of operation
-------------------
An inode number alone is not an identity: a file deleted while the client is down may
have its inode reused by the next file created in the directory (ext4 does this
readily), and a log recreated at every launch often starts with the same banner. So a
checkpoint stores, besides the offset, two hashes (BLAKE2b, 16 bytes):

- the *head*: the first ``min(size, 1024)`` bytes and their count. A file shorter than the
  span gets a short head; the follower re-reads the head while it grows and extends the
  fingerprint (checking the old, shorter head is still a prefix: if not, the file was
  rewritten), so the head of a checkpoint covers as much as the file had when it was
  written, up to 1 KiB;
- the *anchor*: the up to 1024 bytes just before the checkpoint offset.

A checkpoint describes an open file when the file is at least ``offset`` long, its first
bytes match the head and the bytes before ``offset`` match the anchor. The anchor is what
tells a recreated log with the same banner (or a reused inode) from the file that was
read: two logs that agree on their first KiB almost never agree on the KiB before an
arbitrary offset too. The same test recognises a *copy* of a file that was being read
(``copytruncate`` leaves one), so reading can continue in the copy at the right byte.

A finished backlog file is remembered by content, not inode, so a rename or a copy does
not upload it twice: ``backlog_content_key`` hashes its size, its head and its last KiB.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

FINGERPRINT_SPAN = 1024
"""Bytes hashed for a head or an anchor."""

_DIGEST_SIZE = 16
_BLOB_VERSION = 1
_BLOB = struct.Struct(f">BH{_DIGEST_SIZE}sH{_DIGEST_SIZE}s")
_BACKLOG_KEY_PREFIX = b"B1"
_COMPRESSED_KEY_PREFIX = b"Z1"


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).digest()


@dataclass(frozen=True, slots=True)
class FileKey:
    """A file's (device, inode): stable across renames, not across copies."""

    device: int
    inode: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileKey:
        return cls(status.st_dev, status.st_ino)

    def __str__(self) -> str:
        return f"{self.device}:{self.inode}"


@dataclass(frozen=True, slots=True)
class HeadFingerprint:
    """A hash of a file's first ``length`` bytes (``length`` up to ``FINGERPRINT_SPAN``)."""

    length: int
    digest: bytes

    @classmethod
    def of(cls, head: bytes) -> HeadFingerprint:
        head = head[:FINGERPRINT_SPAN]
        return cls(len(head), _digest(head))

    @property
    def complete(self) -> bool:
        """Whether it covers the whole span (it can no longer grow)."""
        return self.length >= FINGERPRINT_SPAN

    def matches(self, head: bytes) -> bool:
        """Whether ``head`` (a file's first bytes) starts with the bytes hashed here."""
        return len(head) >= self.length and _digest(head[: self.length]) == self.digest

    def extended(self, head: bytes) -> HeadFingerprint | None:
        """The fingerprint of the longer ``head``, or None when ``head`` does not start
        with the bytes hashed here (the file was rewritten)."""
        if not self.matches(head):
            return None
        if len(head) > self.length and not self.complete:
            return HeadFingerprint.of(head)
        return self


EMPTY_HEAD = HeadFingerprint.of(b"")


@dataclass(frozen=True, slots=True)
class Anchor:
    """A hash of the up to ``FINGERPRINT_SPAN`` bytes just before some offset."""

    length: int
    digest: bytes

    @classmethod
    def of(cls, bytes_before: bytes) -> Anchor:
        """The anchor of an offset, given (at least) the bytes that precede it."""
        tail = bytes_before[-FINGERPRINT_SPAN:] if bytes_before else b""
        return cls(len(tail), _digest(tail))


@dataclass(frozen=True, slots=True)
class CheckpointFingerprint:
    """What a checkpoint stores about its file besides the offset (see the docstring)."""

    head: HeadFingerprint
    anchor: Anchor

    def to_bytes(self) -> bytes:
        return _BLOB.pack(
            _BLOB_VERSION,
            self.head.length,
            self.head.digest,
            self.anchor.length,
            self.anchor.digest,
        )

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> CheckpointFingerprint | None:
        """Parse a stored blob; None for a missing or unknown one (then the checkpoint
        cannot be trusted and the file is read from its start)."""
        if blob is None or len(blob) != _BLOB.size:
            return None
        version, head_length, head_digest, anchor_length, anchor_digest = _BLOB.unpack(blob)
        if version != _BLOB_VERSION:
            return None
        return cls(HeadFingerprint(head_length, head_digest), Anchor(anchor_length, anchor_digest))


def read_exactly(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    parts: list[bytes] = []
    while size > 0:
        data = os.pread(fd, size, offset)
        if not data:
            break
        parts.append(data)
        size -= len(data)
        offset += len(data)
    return b"".join(parts)


def read_head(fd: int) -> bytes:
    """The first ``FINGERPRINT_SPAN`` bytes of an open file (fewer if it is shorter)."""
    return read_exactly(fd, FINGERPRINT_SPAN, 0)


def read_before(fd: int, offset: int) -> bytes:
    """The up to ``FINGERPRINT_SPAN`` bytes just before ``offset``."""
    length = min(offset, FINGERPRINT_SPAN)
    return read_exactly(fd, length, offset - length)


def describes(fingerprint: CheckpointFingerprint, offset: int, fd: int, size: int) -> bool:
    """Whether a position ``offset`` with ``fingerprint``, taken in some file, is a
    position in the open file ``fd`` of ``size`` bytes: the same file, or a copy of it."""
    if size < offset or fingerprint.anchor.length != min(offset, FINGERPRINT_SPAN):
        return False
    if not fingerprint.head.matches(read_exactly(fd, fingerprint.head.length, 0)):
        return False
    return Anchor.of(read_before(fd, offset)) == fingerprint.anchor


def holds_copy_of(own: int, fd: int, size: int) -> bool:
    """Whether the open file ``fd`` of ``size`` bytes holds the bytes of the open file
    ``own`` (all of them, or a prefix: a copy or a compressed copy made earlier), as far
    as the head and the bytes before the shorter end tell."""
    end = min(size, os.fstat(own).st_size)
    if end == 0:
        return False
    fingerprint = CheckpointFingerprint(
        HeadFingerprint.of(read_head(own)), Anchor.of(read_before(own, end))
    )
    return describes(fingerprint, end, fd, size)


def compressed_identity(fd: int, size: int) -> bytes:
    """A key for a compressed file as it lies on disk (its size, first and last KiB of
    compressed bytes): cheap to take, so a compressed backlog file uploaded before is
    known without decompressing it. A compressed file does not change once written."""
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    hasher.update(size.to_bytes(8, "big"))
    hasher.update(read_exactly(fd, min(size, FINGERPRINT_SPAN), 0))
    hasher.update(read_before(fd, size))
    return _COMPRESSED_KEY_PREFIX + hasher.digest()


def backlog_content_key(fd: int, size: int) -> bytes:
    """A key for a finished file's content: its size, first KiB and last KiB.

    Stable across renames and copies; different for two logs that share a banner (the
    sizes and the last lines differ). A file that grows gets a new key, so its checkpoint
    (by inode) is what keeps a grown backlog file from being uploaded twice.
    """
    head = read_exactly(fd, min(size, FINGERPRINT_SPAN), 0)
    tail = read_before(fd, size)
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    hasher.update(size.to_bytes(8, "big"))
    hasher.update(head)
    hasher.update(tail)
    return _BACKLOG_KEY_PREFIX + hasher.digest()
