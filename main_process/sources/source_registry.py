"""Bookkeeping shared by the parts of the file sources: the open followers and the
trouble reports.

Owns: every open ``FileFollower`` by file identity and by lineage (oldest generation
first, see ``rotation``), the active backlog file, the totals of the followers already
closed (so counters survive a file's close), and the warnings said about each path
(``TroubleLog``: one report per new sentence about a subject).

Must not: read, open or decide anything; the parts of ``sources`` do, and record here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from main_process.sources.file_follower import FileFollower
from main_process.sources.file_identity import FileKey

logger = logging.getLogger("main_process.sources")


class FollowerRegistry:
    """The open followers; see the module docstring."""

    def __init__(self) -> None:
        self.by_key: dict[FileKey, FileFollower] = {}
        """Followers of lineages (live and detached), not the backlog file."""
        self.lineages: dict[str, list[FileFollower]] = {}
        """Open followers by lineage, oldest generation first (see ``rotation``)."""
        self.backlog_active: FileFollower | None = None
        self.closed_bytes_read = 0
        self.closed_invalid = 0
        self.closed_truncations = 0

    def is_open(self, key: FileKey) -> bool:
        """Whether a follower has the file ``key`` open (the backlog file included)."""
        active = self.backlog_active
        return key in self.by_key or (active is not None and active.key == key)

    def open_followers(self) -> list[FileFollower]:
        """Every open file: lineage by lineage, oldest generation first; then the backlog."""
        followers = [follower for members in self.lineages.values() for follower in members]
        if self.backlog_active is not None:
            followers.append(self.backlog_active)
        return followers

    def add_member(self, follower: FileFollower, before: FileFollower | None = None) -> None:
        """Add an open follower to its lineage: as the newest generation, or just before
        ``before`` (an older generation found late)."""
        self.by_key[follower.key] = follower
        members = self.lineages.setdefault(follower.lineage, [])
        if before is not None and before in members:
            members.insert(members.index(before), follower)
        else:
            members.append(follower)

    def set_lineage(self, lineage: str, members: list[FileFollower]) -> None:
        """Make ``members`` (oldest generation first) the open followers of ``lineage``."""
        for follower in members:
            self.by_key[follower.key] = follower
        self.lineages[lineage] = members

    def remove_member(self, follower: FileFollower) -> None:
        self.by_key.pop(follower.key, None)
        members = self.lineages.get(follower.lineage)
        if members is not None and follower in members:
            members.remove(follower)
            if not members:
                del self.lineages[follower.lineage]

    def forget(self, follower: FileFollower) -> None:
        """Close ``follower``, keeping its counts in the totals."""
        self.closed_bytes_read += follower.bytes_read
        self.closed_invalid += follower.invalid_bytes_replaced
        self.closed_truncations += follower.truncations
        follower.close()

    def clear(self) -> None:
        self.by_key.clear()
        self.lineages.clear()
        self.backlog_active = None


class TroubleLog:
    """Warnings about paths: each new sentence about a subject is logged and passed to
    ``on_trouble`` once; ``clear`` lets the same sentence be said again."""

    def __init__(self, on_trouble: Callable[[str], None]) -> None:
        self._on_trouble = on_trouble
        self._by_subject: dict[str, str] = {}
        self.count = 0
        self.last: str | None = None

    def report(self, subject: str, message: str) -> None:
        if self._by_subject.get(subject) == message:
            return
        self._by_subject[subject] = message
        self.count += 1
        self.last = message
        logger.warning("%s", message)
        self._on_trouble(message)

    def clear(self, subject: str) -> None:
        self._by_subject.pop(subject, None)
