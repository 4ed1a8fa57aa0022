"""What a peer's words may cost, and the one error every ``parse_*`` raises.

Owns: ``ProtocolError``, the bounds on names, messages, tokens and client ids, and
``bounded_text``, which makes a peer's string fit to log and show.
Must not: do I/O or log.

Rules: a parser either returns a typed value or raises ``ProtocolError`` with one
sentence saying what was wrong (never the token or password it may have carried).
``ProtocolError`` is a ``ValueError``, so a caller that already caught ``ValueError``
keeps catching it.
"""

from __future__ import annotations

from typing import Any

# A user name is at most this long when shown; a reason or message this long; a token
# longer than this is a payload of the wrong shape (PROTOCOL.md section 3).
MAX_NAME_CHARS = 128
MAX_MESSAGE_CHARS = 500
MAX_TOKEN_CHARS = 8192
# A clientId the reference server binds: at most this long (PROTOCOL.md section 3).
MAX_CLIENT_ID_CHARS = 128


class ProtocolError(ValueError):
    """What arrived is not what the protocol says; the message says how, in one sentence."""


def bounded_text(value: str, limit: int) -> str:
    """A peer's string made fit to log and show: at most ``limit`` characters (an
    ellipsis marks a cut), control characters (newlines too) replaced by U+FFFD."""
    kept = "".join(c if c.isprintable() else "\ufffd" for c in value[:limit])
    return kept + "…" if len(value) > limit else kept


def token_or_none(value: Any) -> str | None:
    """``value`` when it can be a token (a non-empty string of bounded length), else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_CHARS:
        return value
    return None


def kind_of(value: Any) -> str:
    """The JSON kind of a decoded value, for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
