"""The rotation rules as pure decisions: in which order a lineage's open generations are
read and how far, and when a detached file is closed. No I/O: the caller takes the sizes
and clocks and acts on the answer (``lineage_reader``).

Owns: the order rule of ``rotation`` ("Order": sizes taken newest first; an older
generation is read up to its size and its complete lines cut at once, its partial last
line too once a newer generation has lines; a newer one waits until every older one is
caught up and committed), and the idle rule for detached files.

Must not: read, stat, or keep state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GenerationRead:
    """How one open generation of a lineage is read in this round."""

    limit: int | None
    """Read up to this offset (an older generation: its size when the sizes were
    taken); None for the newest, read as far as it goes."""
    partial_line: bool
    """Once read up to ``limit``, cut its partial last line too: a newer generation
    has lines, so its writer has moved on."""


def lineage_reads(older_sizes: Sequence[int | None], newest_size: int) -> list[GenerationRead]:
    """The reads of a lineage's generations, oldest first, given the sizes of all but
    the newest (oldest first; None where the size could not be taken) and the newest's
    size (0 when it could not be taken). The sizes must have been taken newest first."""
    limits: list[int | None] = [*older_sizes, None]
    reads = []
    for index, limit in enumerate(limits):
        newer_has_lines = newest_size > 0 or any(
            (newer or 0) > 0 for newer in limits[index + 1 : -1]
        )
        reads.append(GenerationRead(limit, newer_has_lines))
    return reads


def caught_up(read_offset: int, limit: int | None) -> bool:
    """Whether a generation read to ``read_offset`` reached its limit (the newest one,
    without a limit, never holds the others back)."""
    return limit is None or read_offset >= limit


def detached_close_due(
    now: float, idle_since: float, idle_close: float, *, holds_a_deleted_name: bool
) -> bool:
    """Whether a detached file read to its end is closed now: it has not grown for
    ``idle_close`` seconds, or keeping it open keeps a deleted name taken (Windows)."""
    return holds_a_deleted_name or now - idle_since >= idle_close
