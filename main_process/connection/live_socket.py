"""The live socket as the connection machine sees it: its epoch, what it presented, who
the server says we are on it, and its clocks.

Owns: the epoch counter and the live epoch, the credential the live socket presented,
the handshake's progress (namespace accepted, an ``authenticated`` that came before it),
the identity and user name believed for it (rule 12), and its timers: when the attempt
started, when the server was last heard, when the next ping is due, when the connection
counts as stable (the backoff resets then).

Must not: decide when to open or close, touch the phase, chunks or tokens, or do I/O.
The machine (``connection/steps.py``) opens and closes through it and asks it what is
due.

Rules: each open takes a new epoch (rule 6: events of any other epoch are stale); the
handshake token is the user's access token, else the guest token, else none (rule 2);
closing forgets everything tied to the socket.
"""

from __future__ import annotations

from main_process.connection.events import (
    Action,
    Authenticated,
    CloseSocket,
    ConnectionConfig,
    Credential,
    Identity,
    OpenSocket,
)
from main_process.credentials import Tokens


class LiveSocket:
    """The socket of the live epoch, if any; see the module docstring."""

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._epoch = 0
        self.epoch: int | None = None
        self.credential: Credential = "none"
        self._attempt_started_at = 0.0
        self.namespace_connected = False
        self.early_authentication: Authenticated | None = None
        self.identity: Identity | None = None
        self.username: str | None = None
        self.stable_at: float | None = None
        self.next_ping_at: float | None = None
        self.last_heard_at = 0.0

    def open(self, tokens: Tokens, now: float) -> OpenSocket:
        """A new epoch, presenting the handshake token ``tokens`` hold."""
        self._epoch += 1
        self.epoch = self._epoch
        if tokens.access_token is not None:
            token: str | None = tokens.access_token
            self.credential = "user"
        elif tokens.guest_token is not None:
            token = tokens.guest_token
            self.credential = "guest"
        else:
            token = None
            self.credential = "none"
        self._attempt_started_at = now
        self.namespace_connected = False
        self.early_authentication = None
        self.last_heard_at = now
        return OpenSocket(self._epoch, token, self.credential)

    def close(self, actions: list[Action]) -> None:
        """Close the live socket, if any, and forget what was tied to it."""
        if self.epoch is not None:
            actions.append(CloseSocket(self.epoch))
        self.epoch = None
        self.identity = None
        self.username = None
        self.stable_at = None
        self.next_ping_at = None

    def authenticate(self, event: Authenticated, tokens: Tokens, now: float) -> None:
        """Believe the server's word on who we are only as far as what we presented allows
        (rule 12), and start the heartbeat and the stability timer."""
        presented_user = self.credential == "user"
        if event.identity is not None:
            self.identity = "user" if event.identity == "user" and presented_user else "guest"
        else:
            self.identity = "user" if presented_user else "guest"
        self.username = event.username if self.identity == "user" else None
        if self.username is None and self.identity == "user":
            self.username = tokens.username
        self.stable_at = now + self._config.backoff.reset_after
        self.next_ping_at = now + self._config.ping_interval

    @property
    def handshake_deadline(self) -> float:
        return self._attempt_started_at + self._config.handshake_timeout

    @property
    def silence_deadline(self) -> float:
        return self.last_heard_at + self._config.silence_timeout
