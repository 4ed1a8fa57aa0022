"""The page's only way to act: a narrow ``js_api`` that turns clicks into ipc commands.

Owns: the ``CommandSender`` protocol (``renderer.ipc_link.IpcCommandSender`` over ``ipc``'s
DEALER command client; ``renderer.demo.DemoCommandSender`` in demo mode), and ``PageApi``, the object handed to pywebview as
``js_api``. pywebview exposes every public method of ``PageApi`` to the page as
``window.pywebview.api.<name>(...)`` returning a promise, so ``PageApi`` has exactly one
public method per user action and keeps everything else private (pywebview skips names
starting with ``_``, which is what keeps the sender itself out of the page's reach).

Replies reach the page as plain dicts: ``{"ok": true, "data": ...}`` or
``{"ok": false, "code": ..., "message": ...}``. The password goes to the sender once and
is never returned, logged or kept.

Must not: hold tokens, talk to sockets itself, or block the GUI thread (pywebview already
calls js_api methods on a worker thread per call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from ipc.messages import (
    Command,
    Connect,
    Disconnect,
    Failed,
    Login,
    Logout,
    Ok,
    OpenWindow,
    Reply,
)
from renderer.feed import MainProcessGone

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
MAX_IDENTIFIER_CHARS = 320
MAX_PASSWORD_CHARS = 1024


class CommandSender(Protocol):
    """Sends one command to the main process and waits for its reply."""

    def send(self, command: Command, timeout: float) -> Reply:
        """The main process's reply to ``command``.

        Raises ``TimeoutError`` when no reply came within ``timeout`` seconds, and
        ``MainProcessGone`` when the command channel shows the main process is gone.
        Safe to call from several threads at once.
        """
        ...


def reply_to_page(reply: Reply) -> dict[str, Any]:
    """The JSON-able dict the page's promise resolves to."""
    if isinstance(reply, Failed):
        return {"ok": False, "code": reply.code, "message": reply.message}
    if isinstance(reply, Ok):
        return {"ok": True, "data": reply.data}
    return {"ok": True, "data": None}


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


class PageApi:
    """pywebview's ``js_api``: one method per action the page offers, nothing else public."""

    def __init__(
        self,
        sender: CommandSender,
        on_main_process_gone: Callable[[str], None],
        timeout: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self._sender = sender
        self._on_main_process_gone = on_main_process_gone
        self._timeout = timeout

    def connect(self) -> dict[str, Any]:
        return self._send(Connect())

    def disconnect(self) -> dict[str, Any]:
        return self._send(Disconnect())

    def login(self, identifier: object, password: object) -> dict[str, Any]:
        # Arguments come from the page: check them rather than trust their types.
        if not isinstance(identifier, str) or not isinstance(password, str):
            return _failure("invalid", "The user name and the password must be text.")
        identifier = identifier.strip()
        if not identifier or not password:
            return _failure("invalid", "Enter a user name and a password.")
        if len(identifier) > MAX_IDENTIFIER_CHARS or len(password) > MAX_PASSWORD_CHARS:
            return _failure("invalid", "The user name or the password is too long.")
        return self._send(Login(identifier=identifier, password=password))

    def logout(self) -> dict[str, Any]:
        return self._send(Logout())

    def open_window(self) -> dict[str, Any]:
        return self._send(OpenWindow())

    def _send(self, command: Command) -> dict[str, Any]:
        try:
            return reply_to_page(self._sender.send(command, self._timeout))
        except TimeoutError:
            return _failure("timeout", "The main process did not answer in time.")
        except MainProcessGone as exc:
            self._on_main_process_gone(f"command channel: {exc}")
            return _failure("gone", "The main process has stopped; this window will close.")
        except Exception:
            # Never let a sender bug become an unhandled error in pywebview's thread; the
            # command's repr is safe to log (Login hides its password).
            log.exception("sending %r failed", command)
            return _failure("internal", "The command could not be sent.")
