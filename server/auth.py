"""Who may do what on the reference server: logins, refresh rotation, guests, handshakes.

:class:`AuthService` turns requests into outcomes using the token authority and the store;
it knows nothing of HTTP or Socket.IO, so both front ends share one set of rules:

- a login checks the scrypt hash and starts a session (a refresh-token family);
- a refresh spends the presented refresh token and issues the next pair; presenting a
  spent one revokes the family (someone else holds a copy);
- a handshake with a valid access token of a live session authenticates the user; with a
  known guest token, the guest; with no token or a guest token this server never issued
  to a known guest, a fresh guest token is handed out; anything expired, revoked or badly
  signed is answered with ``retry_auth`` and its reason.

Installation binding (PROTOCOL.md): a ``clientId`` belongs to the guests and users that
proved it. A handshake whose credentials do not own its ``clientId`` is answered
``retry_auth`` ``client_mismatch``; a tokenless one naming a claimed id, ``client_id_taken``
(no guest token is issued for it). A login that names a claimed id must show the
credentials of one of its owners (the installation's guest token, or the refresh token of
the user signed in there) or is refused with 409 ``client_mismatch``: a peer's own valid
credentials do not give it someone else's id. Owners share an id: the installation's
guest keeps it while a user is signed in there, so signing out (or a revoked session)
leaves the installation its id. A logout with the user's current refresh token takes the
id from the user; if no guest owns it then (the user signed in before the installation
ever connected), a new guest does and its token is returned.

:class:`LoginThrottle` slows password guessing: every attempt for an identifier is counted
*before* its password is checked, so concurrent guesses cannot all slip in before the
first failure is recorded; after ``limit`` attempts within ``window`` seconds, further ones
are refused until the oldest leaves the window, and a success clears the count. It is fed
a clock, so tests need no waiting.

Password checks (scrypt, ~80 ms of CPU each) run at most ``password_checks`` at a time,
with at most ``password_queue`` waiting; beyond that a login is answered 503 ``busy`` at
once, so a stream of logins for distinct names can neither take every core nor pile up.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protocol import MAX_CLIENT_ID_CHARS
from server.passwords import hash_password, verify_password
from server.storage import Admission, RefreshOutcome, RefreshProof, Store
from server.tokens import TokenAuthority, TokenRejected

# A hash that verify_password checks against when the user does not exist, so a login
# for an unknown name costs the same time as one with a wrong password.
_UNKNOWN_USER_HASH = hash_password("not a password anyone has")

DEFAULT_PASSWORD_CHECKS = max(1, min(4, (os.cpu_count() or 2) // 2))
"""scrypt runs at once: half the cores (at least one), so logins never take them all."""
DEFAULT_PASSWORD_QUEUE = 64


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    user_id: str
    username: str


@dataclass(frozen=True, slots=True)
class AuthFailure:
    status: int
    code: str
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class UserIdentity:
    user_id: str
    username: str
    expires_at: float
    session_id: str


@dataclass(frozen=True, slots=True)
class GuestIdentity:
    guest_id: str


@dataclass(frozen=True, slots=True)
class IssueGuestToken:
    token: str
    guest_id: str


@dataclass(frozen=True, slots=True)
class RetryAuth:
    reason: str


HandshakeOutcome = UserIdentity | GuestIdentity | IssueGuestToken | RetryAuth


def valid_client_id(client_id: str) -> bool:
    """A ``clientId`` the server binds: 1 to 128 printable characters, no whitespace."""
    return (
        0 < len(client_id) <= MAX_CLIENT_ID_CHARS
        and client_id.isprintable()
        and not any(c.isspace() for c in client_id)
    )


class LoginThrottle:
    def __init__(
        self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        attempts = self._attempts.setdefault(key, deque())
        horizon = self._clock() - self._window
        while attempts and attempts[0] <= horizon:
            attempts.popleft()
        return attempts

    def retry_after(self, identifier: str) -> int | None:
        """Seconds to wait before another attempt is heard, or None when one may go ahead."""
        attempts = self._recent(identifier.casefold())
        if len(attempts) < self._limit:
            return None
        return max(1, int(attempts[0] + self._window - self._clock() + 0.999))

    def admit(self, identifier: str) -> int | None:
        """Count an attempt and return None, or refuse it (not counted): seconds to wait.

        Called before the password is checked, with no ``await`` in between, so however
        many guesses arrive at once, only ``limit`` of them are checked.
        """
        wait = self.retry_after(identifier)
        if wait is not None:
            return wait
        self._attempts[identifier.casefold()].append(self._clock())
        if len(self._attempts) > 10_000:
            # Bound memory under a spray of distinct names: forget identifiers with no
            # attempt inside the window.
            for key in list(self._attempts):
                if not self._recent(key):
                    del self._attempts[key]
        return None

    def record_success(self, identifier: str) -> None:
        self._attempts.pop(identifier.casefold(), None)


class AuthService:
    def __init__(
        self,
        store: Store,
        authority: TokenAuthority,
        throttle: LoginThrottle,
        password_checks: int = DEFAULT_PASSWORD_CHECKS,
        password_queue: int = DEFAULT_PASSWORD_QUEUE,
    ) -> None:
        self._store = store
        # Told the session a reused refresh token revoked, to end its open connections
        # at once, on every node (server/cluster.py).
        self.session_revoked: Callable[[str], Awaitable[None]] | None = None
        self._authority = authority
        self._throttle = throttle
        self._password_slots = asyncio.Semaphore(password_checks)
        self._password_queue = password_queue
        self._logins_in_progress = 0

    async def login(
        self,
        identifier: str,
        password: str,
        client_id: str = "",
        guest_token: str | None = None,
        refresh_token: str | None = None,
    ) -> TokenPair | AuthFailure:
        """Sign in; with ``client_id``, also let the user use that id (see the module
        docstring for the proof a claimed id needs)."""
        if self._logins_in_progress >= self._password_queue:
            return AuthFailure(503, "busy", retry_after=1)
        retry_after = self._throttle.admit(identifier)
        if retry_after is not None:
            return AuthFailure(429, "too_many_attempts", retry_after)
        self._logins_in_progress += 1
        try:
            user = await self._store.find_user(identifier)
            async with self._password_slots:
                # scrypt is deliberately slow; keep it off the event loop and the store's
                # thread, and bounded (the semaphore) so it cannot take every core.
                ok = await asyncio.to_thread(
                    verify_password, password, user.password_hash if user else _UNKNOWN_USER_HASH
                )
        finally:
            self._logins_in_progress -= 1
        if user is None or not ok:
            return AuthFailure(401, "invalid_credentials")
        self._throttle.record_success(identifier)
        # An id no handshake could use (empty, too long, with spaces) binds nothing.
        if valid_client_id(client_id):
            bound = await self._store.bind_at_login(
                user.id,
                client_id,
                self._guest_proof(guest_token),
                self._refresh_proof(refresh_token),
            )
            if not bound:
                return AuthFailure(409, "client_mismatch")
        session_id = str(uuid.uuid4())
        refresh = self._authority.issue_refresh(user.id, session_id)
        await self._store.start_session(session_id, user.id, refresh.jti, refresh.expires_at)
        return TokenPair(
            access_token=self._authority.issue_access(user.id, user.username, session_id),
            refresh_token=refresh.token,
            user_id=user.id,
            username=user.username,
        )

    def _guest_proof(self, token: str | None) -> str | None:
        if not token:
            return None
        try:
            return self._authority.check_guest(token).guest_id
        except TokenRejected:
            return None

    def _refresh_proof(self, token: str | None) -> RefreshProof | None:
        if not token:
            return None
        try:
            claims = self._authority.check_refresh(token)
        except TokenRejected:
            return None
        return RefreshProof(claims.user_id, claims.session_id, claims.jti)

    async def refresh(self, refresh_token: str) -> TokenPair | AuthFailure:
        try:
            claims = self._authority.check_refresh(refresh_token)
        except TokenRejected as rejected:
            return AuthFailure(401, rejected.reason)
        user = await self._store.user_by_id(claims.user_id)
        if user is None:
            return AuthFailure(401, "unknown_user")
        nxt = self._authority.issue_refresh(user.id, claims.session_id)
        outcome = await self._store.rotate_refresh(
            claims.jti, claims.session_id, nxt.jti, nxt.expires_at
        )
        if outcome == RefreshOutcome.REUSED:
            if self.session_revoked is not None:
                await self.session_revoked(claims.session_id)
            return AuthFailure(401, "refresh_token_reused")
        if outcome == RefreshOutcome.REVOKED:
            return AuthFailure(401, "session_revoked")
        if outcome != RefreshOutcome.OK:
            return AuthFailure(401, "invalid_token")
        return TokenPair(
            access_token=self._authority.issue_access(user.id, user.username, claims.session_id),
            refresh_token=nxt.token,
            user_id=user.id,
            username=user.username,
        )

    async def logout(self, refresh_token: str, client_id: str | None = None) -> str | None:
        """End the session; returns a guest token for ``client_id`` when the logout
        showed the session's current refresh token and the user owned that id."""
        try:
            claims = self._authority.check_refresh(refresh_token)
        except TokenRejected:
            return None
        guest_id = await self._store.end_session(
            claims.session_id,
            claims.jti,
            claims.user_id,
            client_id if client_id and valid_client_id(client_id) else None,
        )
        return None if guest_id is None else self._authority.issue_guest(guest_id)

    async def register_guest(self, client_id: str, hostname: str) -> str | None:
        """A guest token for ``client_id``, or None when the id is claimed already."""
        guest_id = await self._store.claim_for_new_guest(client_id, hostname)
        return None if guest_id is None else self._authority.issue_guest(guest_id)

    async def handshake(self, token: str | None, client_id: str, hostname: str) -> HandshakeOutcome:
        if not valid_client_id(client_id):
            return RetryAuth("invalid_client_id")
        if not token:
            return await self._new_guest(client_id, hostname)
        try:
            kind = self._authority.token_type(token)
            if kind == "guest":
                guest = self._authority.check_guest(token)
                admission = await self._store.admit_guest(guest.guest_id, client_id)
                if admission is Admission.OK:
                    return GuestIdentity(guest.guest_id)
                if admission is Admission.UNKNOWN_GUEST:
                    return await self._new_guest(client_id, hostname)
                return RetryAuth("client_mismatch")
            access = self._authority.check_access(token)
        except TokenRejected as rejected:
            return RetryAuth(rejected.reason)
        admission = await self._store.admit_user(access.user_id, access.session_id, client_id)
        if admission is Admission.SESSION_ENDED:
            return RetryAuth("token_revoked")
        if admission is not Admission.OK:
            return RetryAuth("client_mismatch")
        return UserIdentity(access.user_id, access.username, access.expires_at, access.session_id)

    async def _new_guest(self, client_id: str, hostname: str) -> IssueGuestToken | RetryAuth:
        guest_id = await self._store.claim_for_new_guest(client_id, hostname)
        if guest_id is None:
            return RetryAuth("client_id_taken")
        return IssueGuestToken(self._authority.issue_guest(guest_id), guest_id)
