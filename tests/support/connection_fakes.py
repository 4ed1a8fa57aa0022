"""In-memory stand-ins for the connection's ``ChunkStore`` and ``TokenStore`` Protocols.

For tests of ``ServerConnection`` that are about the connection, not about SQLite or the
token file (those are tested with the real ``Spool`` and ``identity.TokenStore``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from main_process.connection.state import Chunk
from main_process.credentials import Tokens


@dataclass
class MemorySpool:
    """An in-memory ``ChunkStore``."""

    chunks: dict[int, Chunk] = field(default_factory=dict)
    dead: dict[int, tuple[str, str]] = field(default_factory=dict)
    next_seq: int = 1
    acknowledged: int = 0

    def append(self, text: str, source: Any = None) -> Chunk:
        chunk = Chunk(self.next_seq, text, source)
        self.chunks[chunk.seq] = chunk
        self.next_seq += 1
        return chunk

    def pending(
        self, after_seq: int | None, limit: int, *, durable_only: bool = False
    ) -> list[Chunk]:
        seqs = sorted(s for s in self.chunks if after_seq is None or s > after_seq)
        return [self.chunks[s] for s in seqs[:limit]]

    @property
    def buffered_chunks(self) -> int:
        return len(self.chunks)

    def acknowledge_many(self, seqs: Sequence[int]) -> int:
        removed = [seq for seq in seqs if self.chunks.pop(seq, None) is not None]
        self.acknowledged += len(removed)
        return len(removed)

    def dead_letter(self, seq: int, code: str, message: str) -> bool:
        if self.chunks.pop(seq, None) is None:
            return False
        self.dead[seq] = (code, message)
        return True

    def sync(self) -> None:
        pass

    def durability_job(self) -> None:
        return None  # nothing to make durable in memory

    def made_durable(self, job: object) -> None:
        pass


@dataclass
class MemoryTokenStore:
    """An in-memory ``TokenStore`` that remembers every save."""

    tokens: Tokens = field(default_factory=Tokens)
    saved: list[Tokens] = field(default_factory=list)

    def load(self) -> Tokens:
        return self.tokens

    def save(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.saved.append(tokens)
