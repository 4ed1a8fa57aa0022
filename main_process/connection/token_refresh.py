"""The tokens the connection holds, what the token file confirmed, and the refresh request.

Owns: the tokens held (``tokens``), the last tokens a save confirmed, the saves not yet
answered, a failing save's error and when it is tried again (with its own backoff), what
waits for the next confirmed save (``AfterSave``), and the refresh request that is out.
It emits ``PersistTokens`` and ``RefreshTokens`` and takes their answers.

Must not: change the phase, open or close sockets, or do I/O. It answers questions and
reports what a confirmed save releases; ``connection/state.py`` decides what to do with it
(send the refresh, reconnect, open).

Rules (8 and 9 of ``connection/state.py``): a token is on disk before anything presents
it (``on_disk``); a refresh token goes out only in answer to a confirmed save of it, made
just before (``start`` saves, ``send`` follows the save); one refresh at a time, and an
answer to a superseded request is stale; a rotated token is kept whatever happened
meanwhile (the request outlives sockets and a user's Disconnect). A save is answered by
the next event the shell feeds, so while saves are unanswered only the last answer
decides; a file that lags behind the tokens held is written again.

Theory: the server spends the refresh token on disk when it rotates it, so the save
before a refresh is the proof that the file can take the next one; if it cannot, the
refresh waits and the token on disk stays unspent. See "When the token file cannot be
written" in ``connection/state.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, TypeAlias

from main_process.connection.backoff import Backoff
from main_process.connection.events import (
    Action,
    PersistTokens,
    RefreshFailed,
    RefreshRefused,
    RefreshSucceeded,
    RefreshTokens,
)
from main_process.credentials import Tokens

AfterSave: TypeAlias = Literal["refresh", "reconnect", "open"]
"""What waits for the next confirmed save: the refresh that would present the refresh
token, the reconnect with rotated tokens, or an open whose token is not on disk yet."""


class TokenRefreshFlow:
    """The token file's bookkeeping and the refresh request; see the module docstring."""

    def __init__(self, tokens: Tokens, save_backoff: Backoff) -> None:
        self.tokens = tokens
        # ``tokens`` were loaded from the file, so they start out saved.
        self._saved = tokens
        self._saves_unanswered = 0
        self._save_backoff = save_backoff
        self.save_error: str | None = None
        self.save_retry_at: float | None = None
        # Set while REFRESHING (the save is out) or WAITING (it failed).
        self.after_save: AfterSave | None = None
        # The refresh request outlives sockets and even a user's Disconnect: its answer
        # may rotate the refresh token, and that must be kept whatever happened.
        self._refresh_counter = 0
        self.refresh_request: int | None = None

    # ------------------------------------------------------------------ the token file

    def persist(self, actions: list[Action]) -> None:
        """Ask the shell to save the tokens held; its answer comes back as an event."""
        self._saves_unanswered += 1
        actions.append(PersistTokens(self.tokens))

    def on_disk(self, token: str | None) -> bool:
        return token is None or token in (self._saved.access_token, self._saved.guest_token)

    def hold_open(self, actions: list[Action]) -> None:
        """An open waits for its token to be saved; save it unless a save is under way."""
        self.after_save = "open"
        if self._saves_unanswered == 0 and self.save_retry_at is None:
            self.persist(actions)

    def on_saved(self, tokens: Tokens, actions: list[Action]) -> AfterSave | None:
        """A save is confirmed; return what waited for it, if it may go on now."""
        self._saves_unanswered = max(0, self._saves_unanswered - 1)
        self._saved = tokens
        if self._saves_unanswered:
            return None  # the answer to a later save decides
        if self.tokens != tokens:
            # The file lags behind what we hold (credentials changed meanwhile): catch up.
            self.persist(actions)
            return None
        self.save_error = None
        self.save_retry_at = None
        self._save_backoff.reset()
        then, self.after_save = self.after_save, None
        return then

    def on_not_saved(self, reason: str, now: float) -> bool:
        """A save failed; return whether something waits for a save (and must hold)."""
        self._saves_unanswered = max(0, self._saves_unanswered - 1)
        if self.tokens == self._saved and self.after_save is None:
            return False  # the file already holds what we hold, and nothing waits for a save
        self.save_error = f"cannot save tokens: {reason}"
        if self.save_retry_at is None:
            self.save_retry_at = now + self._save_backoff.next_delay()
        return self.after_save is not None

    def retry_save_if_due(self, now: float, actions: list[Action]) -> None:
        if self.save_retry_at is not None and now >= self.save_retry_at:
            self.save_retry_at = None
            self.persist(actions)

    def retry_save_now(self, now: float) -> None:
        """The user's Connect while a save fails means "try it now"."""
        if self.save_retry_at is not None:
            self.save_retry_at = now

    def replace_credentials(self, tokens: Tokens, actions: list[Action]) -> None:
        """Login or logout: the caller saved ``tokens``, so the file works again."""
        self.tokens = tokens
        self.refresh_request = None  # its answer belongs to the old credentials
        self.after_save = None
        self._saved = tokens
        self.save_error = None
        self.save_retry_at = None
        self._save_backoff.reset()
        if self._saves_unanswered:
            # A save of the old tokens may have reached the file after the caller's
            # write: write the new ones again so they are what the file ends up holding.
            self.persist(actions)

    def stop_waiting(self) -> None:
        """Nothing waits for a save any more (a Disconnect, a fatal error)."""
        self.after_save = None

    def stop_retrying_if_saved(self) -> None:
        """With nothing to wait for, a save that failed matters only if the file lags."""
        if self.tokens == self._saved:
            self.save_retry_at = None
            self.save_error = None

    # ------------------------------------------------------------------ token changes

    def keep_guest_token(self, token: str | None, actions: list[Action]) -> None:
        """A guest token the server gave (or ``None``: one it refused); save the change."""
        self.tokens = replace(self.tokens, guest_token=token)
        self.persist(actions)

    def sign_out(self, actions: list[Action]) -> None:
        self.tokens = replace(
            self.tokens, access_token=None, refresh_token=None, user_id=None, username=None
        )
        self.persist(actions)

    # ------------------------------------------------------------------ refresh

    def start(self, actions: list[Action]) -> None:
        """Save before refreshing, unless a refresh (or the save before one) is under way:
        a file that cannot take the next token is found out before the server spends it."""
        if self.refresh_request is not None or self.after_save is not None:
            return  # one refresh at a time; its answer (or its save's) moves us on
        self.after_save = "refresh"
        self.persist(actions)

    def send(self, refresh_token: str, actions: list[Action]) -> None:
        """Present ``refresh_token``; called only right after a confirmed save of it."""
        self._refresh_counter += 1
        self.refresh_request = self._refresh_counter
        actions.append(RefreshTokens(self.refresh_request, refresh_token))

    def take_answer(self, event: RefreshSucceeded | RefreshRefused | RefreshFailed) -> bool:
        """Whether ``event`` answers the request that is out (it is then no longer out)."""
        if event.request_id != self.refresh_request:
            return False
        self.refresh_request = None
        return True

    def keep_rotated(self, event: RefreshSucceeded, actions: list[Action]) -> None:
        """Hold the rotated tokens and save them; presenting them waits for the save."""
        self.tokens = replace(
            self.tokens,
            access_token=event.access_token,
            refresh_token=event.refresh_token,
            user_id=event.user_id or self.tokens.user_id,
            username=event.username or self.tokens.username,
        )
        self.persist(actions)
