"""Who this installation is: the client id and the tokens, stored on disk.

Owns: the client id file (a UUID v4 created once per data directory), the token file
(``tokens.json``, mode 0600), both written whole (``ipc.atomic_file``: a crash at any
instant leaves either the old file or the new one, never half of one).

A client id is replaced only when the server holds it for credentials this installation
no longer has (``ClientIdFile.renew``, asked by the connection): the old file is kept as
``client-id.taken-<time>``, never deleted, like a damaged one.

Rules it keeps:

- A token value never reaches a log line, an exception message or a ``repr``.
- A damaged file never stops the client from starting: a corrupt client id is replaced by
  a fresh one (the bad file is kept aside), and corrupt or unreadable tokens mean a fresh
  guest identity (the server issues a new guest token). Each case logs one warning line.
- A token file readable by group or others is tightened to 0600 when it is loaded.
- A full disk does not stop a token save: next to the token file lies a reserve
  (``tokens.json.reserve``, 16 KiB, set aside when the store loads and after each save),
  given up when a save finds the disk full, so that one save still fits. The connection
  presents only tokens that are on disk; without the reserve, a client on a full disk
  could not store the guest token it needs to ship, and so could never drain the spool
  that fills the disk.

Must not: talk to the server, decide when tokens are refreshed or forgotten (the
connection does), or hold tokens anywhere but the returned ``Tokens`` value.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ipc.atomic_file import PRIVATE_FILE_MODE, write_file_atomically
from main_process.paths import CLIENT_ID_FILENAME, ensure_private_dir, set_aside
from main_process.spool.disk_reserve import DiskReserve

logger = logging.getLogger(__name__)

_TOKEN_FILE_VERSION = 1
TOKEN_RESERVE_BYTES = 16 * 1024
"""Room kept for the token file on a full disk: several copies of a token file (~2 KB)."""
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class IdentityError(Exception):
    """A client id or token file cannot be read or written; the message is one sentence.

    ``reason`` is the cause in a few words, for a status line (e.g. ``"Read-only file
    system (/data/tokens.json)"``); it defaults to the message.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


# ----------------------------------------------------------------------------- client id


def load_or_create_client_id(data_dir: Path | str) -> str:
    """The installation's client id, created (UUID v4) and stored on first use.

    A file whose content is not a UUID is moved aside (``client-id.corrupt-<time>``) and
    replaced by a fresh id, with a warning. Raises ``IdentityError`` when the file or the
    directory cannot be read or written at all (a fresh id that cannot be stored would
    change at every start).
    """
    directory = Path(data_dir)
    path = directory / CLIENT_ID_FILENAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _create_client_id(path)
    except OSError as exc:
        raise IdentityError(
            f"Cannot read the client id file {path}: {exc.strerror or exc}."
        ) from exc

    existing = _parse_client_id(raw)
    if existing is not None:
        return existing
    try:
        kept = set_aside(path)
    except OSError as exc:
        raise IdentityError(
            f"The client id file {path} is corrupt and cannot be moved aside: "
            f"{exc.strerror or exc}."
        ) from exc
    logger.warning("client id file %s was corrupt; kept it as %s and created a new id", path, kept)
    return _create_client_id(path)


class ClientIdFile:
    """The client id file of one data directory, as the connection's ``ClientIdStore``."""

    def __init__(self, data_dir: Path | str) -> None:
        self._directory = Path(data_dir)

    def load_or_create(self) -> str:
        return load_or_create_client_id(self._directory)

    def renew(self, taken: str) -> str:
        """Keep the file holding ``taken`` aside (``client-id.taken-<time>``) and store a new
        id; raises ``IdentityError`` when that cannot be done."""
        path = self._directory / CLIENT_ID_FILENAME
        try:
            kept: Path | None = set_aside(path, reason="taken")
        except FileNotFoundError:
            kept = None
        except OSError as exc:
            raise IdentityError(
                f"Cannot keep the client id file {path} aside: {exc.strerror or exc}."
            ) from exc
        client_id = _create_client_id(path)
        logger.warning(
            "client id %s is held by other credentials on the server; kept it as %s, "
            "the new id is %s",
            taken,
            kept,
            client_id,
        )
        return client_id


def _parse_client_id(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii").strip()
        return str(uuid.UUID(text))
    except (UnicodeDecodeError, ValueError):
        return None


def _create_client_id(path: Path) -> str:
    client_id = str(uuid.uuid4())
    try:
        ensure_private_dir(path.parent)
        write_file_atomically(path, f"{client_id}\n".encode("ascii"), mode=0o644)
    except OSError as exc:
        raise IdentityError(
            f"Cannot write the client id file {path}: {exc.strerror or exc}."
        ) from exc
    logger.info("created client id %s in %s", client_id, path)
    return client_id


# -------------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Tokens:
    """The credentials the client holds; all ``None`` is a fresh guest (no token yet).

    ``repr`` shows only whether each token is set, never its value.
    """

    access_token: str | None = None
    refresh_token: str | None = None
    guest_token: str | None = None
    user_id: str | None = None
    username: str | None = None

    @property
    def signed_in(self) -> bool:
        """True when user tokens are held (as opposed to guest or nothing)."""
        return self.access_token is not None or self.refresh_token is not None

    @property
    def handshake_token(self) -> str | None:
        """The token for the Socket.IO ``auth`` field: access, else guest, else none."""
        return self.access_token if self.access_token is not None else self.guest_token

    def __repr__(self) -> str:
        def presence(value: str | None) -> str:
            return "<set>" if value is not None else "None"

        return (
            f"Tokens(access_token={presence(self.access_token)}, "
            f"refresh_token={presence(self.refresh_token)}, "
            f"guest_token={presence(self.guest_token)}, "
            f"user_id={self.user_id!r}, username={self.username!r})"
        )

    __str__ = __repr__


_TOKEN_FIELDS = tuple(f.name for f in fields(Tokens))


class TokenStore:
    """Load and save ``Tokens`` in one JSON file (mode 0600), atomically.

    ``load`` never raises: a missing, unreadable or corrupt file gives ``Tokens()``.
    ``save`` raises ``IdentityError`` because a rotated refresh token that is not on disk
    must not be used (PROTOCOL.md section 5). Both keep the reserve (module docstring).
    """

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._reserve = DiskReserve(self._path, TOKEN_RESERVE_BYTES)

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> Tokens:
        path = self._path
        if path.parent.is_dir():
            self._reserve.keep()
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return Tokens()
        except OSError as exc:
            logger.warning(
                "token file %s is unreadable (%s); continuing as a new guest",
                path,
                exc.strerror or type(exc).__name__,
            )
            return Tokens()
        try:
            self._tighten_mode(fd)
            with os.fdopen(fd, "rb", closefd=False) as file:
                raw = file.read()
        except OSError as exc:
            logger.warning(
                "token file %s is unreadable (%s); continuing as a new guest",
                path,
                exc.strerror or type(exc).__name__,
            )
            return Tokens()
        finally:
            os.close(fd)

        tokens = parse_tokens(raw)
        if tokens is not None:
            return tokens
        try:
            kept: Path | str = set_aside(path)
        except OSError as exc:
            kept = f"nowhere ({exc.strerror or type(exc).__name__})"
        # The file's content is deliberately not logged: it may hold token values.
        logger.warning(
            "token file %s was corrupt; kept it as %s; continuing as a new guest", path, kept
        )
        return Tokens()

    def save(self, tokens: Tokens) -> None:
        data = json.dumps(token_document(tokens), indent=2).encode("utf-8") + b"\n"
        try:
            ensure_private_dir(self._path.parent)
            try:
                write_file_atomically(self._path, data, mode=PRIVATE_FILE_MODE)
            except OSError as exc:
                if exc.errno not in _DISK_FULL or not self._release_reserve():
                    raise
                write_file_atomically(self._path, data, mode=PRIVATE_FILE_MODE)
        except OSError as exc:
            # ``exc`` names the temporary file at best; the user knows the token file.
            why = exc.strerror or type(exc).__name__
            raise IdentityError(
                f"Cannot write the token file {self._path}: {why}.", reason=f"{why} ({self._path})"
            ) from exc
        self._reserve.keep()

    def _release_reserve(self) -> bool:
        if not self._reserve.release():
            return False
        logger.warning(
            "the disk under %s is full; gave up the token file's reserve to save tokens",
            self._path,
        )
        return True

    def _tighten_mode(self, fd: int) -> None:
        if os.name != "posix":
            return
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if not mode & 0o077:
            return
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        except OSError as exc:
            # Not our file to change (another owner): still usable, so keep the tokens.
            logger.warning(
                "token file %s is readable by others (mode %o) and cannot be made private: %s",
                self._path,
                mode,
                exc.strerror or type(exc).__name__,
            )
            return
        logger.warning(
            "token file %s was readable by others (mode %o); changed it to 600",
            self._path,
            mode,
        )


def token_document(tokens: Tokens) -> dict[str, Any]:
    """The JSON document of a token file (and of a keychain item)."""
    document: dict[str, Any] = {"version": _TOKEN_FILE_VERSION}
    for name in _TOKEN_FIELDS:
        document[name] = getattr(tokens, name)
    return document


def parse_tokens(raw: bytes) -> Tokens | None:
    """The tokens of a token document, or None when it is not one."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    values: dict[str, str | None] = {}
    for name in _TOKEN_FIELDS:
        value = document.get(name)
        # Servers may send a numeric user id; it is an identifier, kept as text.
        if name == "user_id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and not isinstance(value, str):
            return None
        values[name] = value
    return Tokens(**values)
