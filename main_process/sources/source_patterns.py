"""The ``PATH_OR_GLOB`` patterns of the file sources: which paths they match now, which
directories can hold their matches, and which pattern (so which encoding) a path is of.

Owns: expanding a source pattern (``expand_source_pattern``: a named path, or a glob
whose directories may be globs too) and a backlog pattern (``expand_backlog_pattern``: a
glob, a directory's every entry, or one named file), finding the pattern of a path, and
the chunker options of a file by its pattern's encoding (``ChunkerOptionsByPattern``).

Must not: open, stat or follow files (``file_discovery`` and ``backlog_queue`` do), or
watch directories (``directory_watch``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
from collections.abc import Callable, Mapping, Sequence

from main_process.sources.file_follower import ChunkerOptions
from main_process.sources.text_codecs import FileEncoding
from main_process.sources.text_codecs import normalize as normalize_encoding


def pattern_of(path: str, patterns: Sequence[str]) -> str | None:
    """The first of ``patterns`` that matches ``path`` (as it was given), or None."""
    directory, name = os.path.split(path)
    for pattern in patterns:
        expanded = os.path.abspath(os.path.expanduser(pattern))
        if not glob.has_magic(expanded):
            if expanded == path or (os.path.isdir(expanded) and directory == expanded):
                return pattern
            continue
        directory_pattern, name_pattern = os.path.split(expanded)
        if fnmatch.fnmatchcase(name, name_pattern) and (
            directory == directory_pattern or fnmatch.fnmatchcase(directory, directory_pattern)
        ):
            return pattern
    return None


def expand_source_pattern(pattern: str, watch_dirs: set[str]) -> list[tuple[str, bool]]:
    """Paths matching ``pattern`` (and whether it names one file explicitly); adds the
    directories that can hold its matches to ``watch_dirs``."""
    expanded = os.path.abspath(os.path.expanduser(pattern))
    if not glob.has_magic(expanded):
        watch_dirs.add(os.path.dirname(expanded))
        return [(expanded, True)]
    directory_pattern = os.path.dirname(expanded)
    if glob.has_magic(directory_pattern):
        watch_dirs.update(glob.glob(directory_pattern, recursive=True))
    else:
        watch_dirs.add(directory_pattern)
    return [(path, False) for path in sorted(glob.glob(expanded, recursive=True))]


def expand_backlog_pattern(
    pattern: str, report: Callable[[str, str], None]
) -> list[tuple[str, bool]]:
    """Paths of a backlog ``pattern`` (and whether it names that one file explicitly);
    a directory stands for every entry in it. ``report(subject, sentence)`` says why
    nothing is there."""
    expanded = os.path.abspath(os.path.expanduser(pattern))
    if glob.has_magic(expanded):
        return [(path, False) for path in sorted(glob.glob(expanded, recursive=True))]
    if os.path.isdir(expanded):
        try:
            names = sorted(os.listdir(expanded))
        except OSError as exc:
            report(expanded, f"{expanded} cannot be listed: {exc.strerror or exc}.")
            return []
        return [(os.path.join(expanded, name), False) for name in names]
    if os.path.lexists(expanded):
        return [(expanded, True)]
    report(expanded, f"The backlog {expanded} does not exist.")
    return []


class ChunkerOptionsByPattern:
    """The chunker options of a file: its pattern's encoding, else the default one."""

    def __init__(
        self, options: ChunkerOptions, default_encoding: str, encodings: Mapping[str, str]
    ) -> None:
        self._encoding = normalize_encoding(default_encoding)
        self._encodings = {p: normalize_encoding(e) for p, e in encodings.items()}
        """Per pattern (as given): the encoding of the files it matches."""
        self._options = dataclasses.replace(options, encoding=FileEncoding(self._encoding))

    def for_path(self, path: str, patterns: Sequence[str]) -> ChunkerOptions:
        pattern = pattern_of(path, patterns)
        name = self._encodings.get(pattern, self._encoding) if pattern else self._encoding
        if name == self._options.encoding.name:
            return self._options
        return dataclasses.replace(self._options, encoding=FileEncoding(name))
