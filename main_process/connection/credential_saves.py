"""The connection's credentials on disk: the token file and the installation's client id.

Owns: saving the tokens when ``ConnectionState`` says ``PersistTokens`` (the outcome,
``TokensSaved`` or ``TokensNotSaved``, is the machine's next event), knowing what the
token file holds, one last save when the connection closes with tokens that are not on
disk, and a new client id when the machine says ``RenewClientId``.

Must not: decide when to save or renew (the machine does), or put a token in a message
or a log line.

The client id. ``client_id`` is the installation's id, sent in every handshake, chunk and
ping. When the server holds it for credentials this installation no longer has, the
``ClientIdStore`` makes a new one and keeps the old one aside; everything from then on
goes under the new id: chunks still in the spool go out as ``<new id>:<seq>``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from main_process.connection.socket_attempt import describe
from main_process.connection.state import ClientIdRenewed, TokensNotSaved, TokensSaved
from main_process.credentials import IdentityError, Tokens

logger = logging.getLogger(__name__)


class TokenStore(Protocol):
    """The token file (``main_process.credentials.TokenStore`` fits)."""

    def load(self) -> Tokens: ...

    def save(self, tokens: Tokens) -> None:
        """Write atomically with mode 0600; raise if that is impossible.

        The file then holds what it held. An ``IdentityError`` with a ``reason`` says why
        in words for the status line; the message of any exception must hold no token.
        """
        ...


class ClientIdStore(Protocol):
    """Where the installation's id lives (``main_process.credentials.ClientIdFile`` fits)."""

    def renew(self, taken: str) -> str:
        """Keep ``taken`` aside, store a new id and return it; raise if it cannot be stored.

        The message of an ``IdentityError`` says why, in words for the status line."""
        ...


class ClientIdInMemory:
    """The ``ClientIdStore`` of a connection given none: a new id lives as long as it."""

    def renew(self, taken: str) -> str:
        return str(uuid.uuid4())


def save_failure(exc: Exception) -> str:
    """Why a token save failed, for ``cannot save tokens: <reason>``; never a token."""
    if isinstance(exc, IdentityError) and exc.reason:
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return describe(exc)


class ConnectionCredentials:
    """The token file and the client id as one connection uses them."""

    def __init__(self, token_store: TokenStore, client_ids: ClientIdStore, client_id: str) -> None:
        self._token_store = token_store
        self._client_ids = client_ids
        self.client_id = client_id
        # What the token file holds, as far as the connection knows: loaded, then each save.
        self.on_disk = token_store.load()

    def save(self, tokens: Tokens) -> TokensSaved | TokensNotSaved:
        try:
            self._token_store.save(tokens)
        except Exception as exc:
            reason = save_failure(exc)
            logger.error("cannot save tokens: %s", reason)
            return TokensNotSaved(reason)
        self.on_disk = tokens
        return TokensSaved(tokens)

    def save_before_closing(self, tokens: Tokens) -> None:
        """One more try at saving tokens the machine could not save, before they are gone."""
        if tokens == self.on_disk:
            return
        if isinstance(self.save(tokens), TokensSaved):
            logger.info("saved the tokens while closing")
        else:
            logger.error(
                "closing with tokens that are not on disk: if the server already rotated "
                "the session, the next start continues as a guest until you sign in again"
            )

    def renew_client_id(self) -> ClientIdRenewed:
        taken = self.client_id
        problem: str | None = None
        try:
            self.client_id = self._client_ids.renew(taken)
        except Exception as exc:
            # Go on under a new id anyway: chunks must flow. The next start reads the old
            # id, is refused the same way, and takes another one.
            problem = str(exc) if isinstance(exc, IdentityError) else describe(exc)
            self.client_id = str(uuid.uuid4())
            logger.error("cannot store the new client id: %s", problem)
        logger.warning(
            "the server holds client id %s for other credentials; continuing as %s",
            taken,
            self.client_id,
        )
        return ClientIdRenewed(self.client_id, problem)
