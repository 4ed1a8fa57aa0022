"""Which paths the file sources may follow: the ``follow_symlinks`` policy, and the
look at a path before it is opened.

Owns: what a named path was (a link or not) the first time this run saw it, the decision
whether a symbolic link may be followed (see "Symbolic links" in ``sources``), and the
one-sentence reports about a path that cannot be followed (missing, unreachable, a
directory, not a regular file, a refused link).

Must not: open files (``file_follower.open_log_file`` enforces the decision with
``O_NOFOLLOW``) or decide what a file is for.
"""

from __future__ import annotations

import os
import stat

from main_process.sources.file_follower import SymlinkPolicy, symlink_refused
from main_process.sources.source_registry import TroubleLog


class LinkPolicy:
    """The ``follow_symlinks`` policy of one run; see the module docstring."""

    def __init__(self, policy: SymlinkPolicy, troubles: TroubleLog) -> None:
        self._policy = policy
        self._troubles = troubles
        self._first_seen_link: dict[str, bool] = {}
        """Named paths (no wildcard): whether each was a link when first seen."""

    @property
    def follows_every_link(self) -> bool:
        """``"always"``: links are followed even where the user named no path (rotated
        siblings, for instance)."""
        return self._policy == "always"

    def _may_follow_link(self, path: str, explicit: bool, is_link: bool) -> bool:
        """Whether a symbolic link at ``path`` may be followed; records what a named path
        was when first seen."""
        if self._policy == "always":
            return True
        if self._policy == "never" or not explicit:
            return False
        return self._first_seen_link.setdefault(path, is_link)

    def link_refused(self, path: str, explicit: bool) -> bool | None:
        """None when ``path`` is a symbolic link that may not be followed (reported);
        else whether to open it following a link."""
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:
            # Missing or unreachable: the stat that follows says which, in a sentence.
            return False
        follow = self._may_follow_link(path, explicit, is_link)
        if is_link and not follow:
            self._troubles.report(path, str(symlink_refused(path)))
            return None
        return follow

    def stat_for_following(
        self, path: str, explicit: bool, *, report_missing: bool
    ) -> tuple[os.stat_result, bool] | None:
        """The status of a file to follow at ``path`` and whether to open it through a
        link; None (reported when worth saying) when it is not to be followed. A missing
        named path is reported only with ``report_missing``."""
        follow_symlink = self.link_refused(path, explicit)
        if follow_symlink is None:
            return None
        report = self._troubles.report
        try:
            status = os.stat(path)
        except FileNotFoundError:
            if explicit and report_missing:
                if os.path.islink(path):
                    message = f"{path} is a symbolic link to a missing file; it will be followed once the target exists."
                else:
                    message = f"{path} does not exist; it will be followed once it appears."
                report(path, message)
            return None
        except PermissionError:
            report(path, f"{path} cannot be reached: permission denied.")
            return None
        except OSError as exc:
            report(path, f"{path} cannot be examined: {exc.strerror or exc}.")
            return None
        if stat.S_ISREG(status.st_mode):
            return status, follow_symlink
        if explicit and stat.S_ISDIR(status.st_mode):
            report(path, f"{path} is a directory, not a log file (use a glob like {path}/*.log).")
        elif explicit:
            report(path, f"{path} is not a regular file.")
        return None
