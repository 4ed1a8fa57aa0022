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

:class:`LoginThrottle` slows password guessing: after ``limit`` failures for one
identifier within ``window`` seconds, further attempts are refused until the oldest
failure leaves the window. It is fed a clock, so tests need no waiting.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from server.passwords import hash_password, verify_password
from server.storage import RefreshOutcome, ServerStore
from server.tokens import TokenAuthority, TokenRejected

# A hash that verify_password checks against when the user does not exist, so a login
# for an unknown name costs the same time as one with a wrong password.
_UNKNOWN_USER_HASH = hash_password("not a password anyone has")


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


class LoginThrottle:
    def __init__(
        self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, identifier: str) -> deque[float]:
        failures = self._failures.setdefault(identifier.casefold(), deque())
        horizon = self._clock() - self._window
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def retry_after(self, identifier: str) -> int | None:
        """Seconds to wait before another attempt is heard, or None when one may go ahead."""
        failures = self._recent(identifier)
        if len(failures) < self._limit:
            return None
        return max(1, int(failures[0] + self._window - self._clock() + 0.999))

    def record_failure(self, identifier: str) -> None:
        self._recent(identifier).append(self._clock())
        if len(self._failures) > 10_000:
            # Bound memory under a spray of distinct names: forget identifiers with no
            # failure inside the window.
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def record_success(self, identifier: str) -> None:
        self._failures.pop(identifier.casefold(), None)


class AuthService:
    def __init__(
        self, store: ServerStore, authority: TokenAuthority, throttle: LoginThrottle
    ) -> None:
        self._store = store
        self._authority = authority
        self._throttle = throttle

    async def login(self, identifier: str, password: str) -> TokenPair | AuthFailure:
        retry_after = self._throttle.retry_after(identifier)
        if retry_after is not None:
            return AuthFailure(429, "too_many_attempts", retry_after)
        db = self._store.database
        user = await self._store.run(db.find_user, identifier)
        # scrypt is deliberately slow; keep it off the event loop and off the store thread.
        ok = await asyncio.to_thread(
            verify_password, password, user.password_hash if user else _UNKNOWN_USER_HASH
        )
        if user is None or not ok:
            self._throttle.record_failure(identifier)
            return AuthFailure(401, "invalid_credentials")
        self._throttle.record_success(identifier)
        session_id = str(uuid.uuid4())
        refresh = self._authority.issue_refresh(user.id, session_id)
        await self._store.run(
            db.start_session, session_id, user.id, refresh.jti, refresh.expires_at
        )
        return TokenPair(
            access_token=self._authority.issue_access(user.id, user.username, session_id),
            refresh_token=refresh.token,
            user_id=user.id,
            username=user.username,
        )

    async def refresh(self, refresh_token: str) -> TokenPair | AuthFailure:
        try:
            claims = self._authority.check_refresh(refresh_token)
        except TokenRejected as rejected:
            return AuthFailure(401, rejected.reason)
        db = self._store.database
        user = await self._store.run(db.user_by_id, claims.user_id)
        if user is None:
            return AuthFailure(401, "unknown_user")
        nxt = self._authority.issue_refresh(user.id, claims.session_id)
        outcome = await self._store.run(
            db.rotate_refresh, claims.jti, claims.session_id, nxt.jti, nxt.expires_at
        )
        if outcome == RefreshOutcome.REUSED:
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

    async def logout(self, refresh_token: str) -> None:
        try:
            claims = self._authority.check_refresh(refresh_token)
        except TokenRejected:
            return
        await self._store.run(self._store.database.revoke_session, claims.session_id)

    async def register_guest(self, client_id: str, hostname: str) -> str:
        guest_id = await self._store.run(self._store.database.add_guest, client_id, hostname)
        return self._authority.issue_guest(guest_id)

    async def handshake(self, token: str | None, client_id: str, hostname: str) -> HandshakeOutcome:
        if not token:
            return await self._new_guest(client_id, hostname)
        db = self._store.database
        try:
            kind = self._authority.token_type(token)
            if kind == "guest":
                guest = self._authority.check_guest(token)
                if await self._store.run(db.guest_exists, guest.guest_id):
                    return GuestIdentity(guest.guest_id)
                return await self._new_guest(client_id, hostname)
            access = self._authority.check_access(token)
        except TokenRejected as rejected:
            return RetryAuth(rejected.reason)
        if not await self._store.run(db.session_is_live, access.session_id):
            return RetryAuth("token_revoked")
        return UserIdentity(access.user_id, access.username, access.expires_at)

    async def _new_guest(self, client_id: str, hostname: str) -> IssueGuestToken:
        guest_id = await self._store.run(self._store.database.add_guest, client_id, hostname)
        return IssueGuestToken(self._authority.issue_guest(guest_id), guest_id)
