"""The server's tokens: HS256 JWTs signed with the data dir's secret (PyJWT).

Three kinds, told apart by the ``typ`` claim so one can never stand in for another:

- ``access``: short-lived (``--access-ttl``), names the user and the session it belongs to;
- ``refresh``: long-lived, single use; each refresh spends it and issues the next one;
- ``guest``: no expiry, names a guest registered in the database.

This module only signs and checks signatures and claims; whether a session is revoked or a
guest is known is the database's answer, asked by the caller.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
REFRESH_TTL_SECONDS = 30 * 24 * 3600


class TokenRejected(Exception):
    """A token that cannot be used; ``reason`` is the code sent to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    username: str
    session_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    user_id: str
    session_id: str
    jti: str


@dataclass(frozen=True, slots=True)
class GuestClaims:
    guest_id: str


@dataclass(frozen=True, slots=True)
class IssuedRefresh:
    token: str
    jti: str
    expires_at: int


class TokenAuthority:
    def __init__(self, secret: bytes | None, access_ttl_seconds: float) -> None:
        self._secret_value = secret
        self.access_ttl_seconds = access_ttl_seconds

    def use_secret(self, secret: bytes) -> None:
        """The secret, once known (a PostgreSQL store reads it when it connects)."""
        self._secret_value = secret

    @property
    def _secret(self) -> bytes:
        # Never sign or check with no secret, or a short one, whatever the start order.
        if self._secret_value is None or len(self._secret_value) < 32:
            raise RuntimeError("the token authority has no signing secret yet")
        return self._secret_value

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def _decode(self, token: str, expected_type: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["typ", "sub"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token_expired") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("invalid_signature") from None
        except jwt.InvalidTokenError:
            raise TokenRejected("invalid_token") from None
        if claims.get("typ") != expected_type:
            raise TokenRejected("invalid_token")
        return claims

    def token_type(self, token: str) -> str:
        """The ``typ`` of a token whose signature is valid, without checking expiry."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "require": ["typ", "sub"]},
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("invalid_signature") from None
        except jwt.InvalidTokenError:
            raise TokenRejected("invalid_token") from None
        return str(claims.get("typ"))

    def issue_access(self, user_id: str, username: str, session_id: str) -> str:
        now = time.time()
        return self._sign(
            {
                "typ": "access",
                "sub": user_id,
                "name": username,
                "sid": session_id,
                "iat": int(now),
                # Fractional expiry keeps short test TTLs exact; PyJWT accepts a float.
                "exp": now + self.access_ttl_seconds,
                "jti": uuid.uuid4().hex,
            }
        )

    def check_access(self, token: str) -> AccessClaims:
        claims = self._decode(token, "access")
        try:
            return AccessClaims(
                user_id=str(claims["sub"]),
                username=str(claims["name"]),
                session_id=str(claims["sid"]),
                expires_at=float(claims["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenRejected("invalid_token") from None

    def issue_refresh(self, user_id: str, session_id: str | None = None) -> IssuedRefresh:
        jti = uuid.uuid4().hex
        expires_at = int(time.time()) + REFRESH_TTL_SECONDS
        claims: dict[str, Any] = {"typ": "refresh", "sub": user_id, "jti": jti, "exp": expires_at}
        if session_id is not None:
            claims["sid"] = session_id
        return IssuedRefresh(token=self._sign(claims), jti=jti, expires_at=expires_at)

    def check_refresh(self, token: str) -> RefreshClaims:
        claims = self._decode(token, "refresh")
        try:
            return RefreshClaims(
                user_id=str(claims["sub"]), session_id=str(claims["sid"]), jti=str(claims["jti"])
            )
        except KeyError:
            raise TokenRejected("invalid_token") from None

    def issue_guest(self, guest_id: str) -> str:
        return self._sign({"typ": "guest", "sub": guest_id, "iat": int(time.time())})

    def check_guest(self, token: str) -> GuestClaims:
        claims = self._decode(token, "guest")
        return GuestClaims(guest_id=str(claims["sub"]))
