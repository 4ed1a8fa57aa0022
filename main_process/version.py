"""The client's version, read from the installed package's metadata (``pyproject.toml``).

Owns: the one place that knows the version string, for ``--version`` and the ``userAgent``
sent to the server. Must not: hard-code a number (the metadata is the source of truth).
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

DISTRIBUTION = "log-monitor-client"


@cache
def client_version() -> str:
    """The installed version, e.g. ``"0.1.0"``; ``"0+unknown"`` when run from a tree that
    was never installed (no metadata to read)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"
