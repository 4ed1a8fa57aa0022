"""The main process's answers to commands from viewers and the CLI.

Owns ``COMMAND_TABLE``, the dispatch table from each ``ipc.messages.Command`` type the
main process answers to the method that answers it, and those methods:

- ``Connect``/``Disconnect`` move the connection and tell the notification policy that
  the user chose it (a chosen Disconnect is not "unreachable").
- ``Login``: the password arrives once, is sent to the server's login endpoint, and is
  dropped; the tokens are written to the token store before the connection is told to
  use them. A login names the installation's current client id (the connection's: the
  server may have made it take a new one) and shows its credentials.
- ``Logout`` asks the server first, so the guest token it may hand back for the same id
  is what the connection goes on with.
- ``OpenWindow``, ``ReportWindow``, ``ReportTray``, ``ControlWindows``: the renderer
  host's windows and tray (``windows.WindowHost``), re-published for the viewers.
- ``Shutdown`` is answered first, then the main process stops.

``ANSWERED_BY_IPC`` names the commands ``ipc.commands`` answers itself (from the
publisher's cache) without asking the main process; every other ``Command`` type has a
row in the table (``tests/unit/test_command_table.py`` checks it).

Must not: decide protocol matters (``connection.state`` does), or hold tokens beyond the
call that saves them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ipc.messages import (
    Command,
    Connect,
    ControlWindows,
    Disconnect,
    Failed,
    GetStatus,
    Login,
    Logout,
    Ok,
    OpenWindow,
    Ping,
    ReportTray,
    ReportWindow,
    Shutdown,
    Snapshot,
    WindowsInventory,
)
from ipc.messages import Reply as IpcReply
from main_process.connection.auth_client import SignInFailed, sign_in, sign_out, signed_out
from main_process.connection.server_connection import ServerConnection
from main_process.windows import can_show_windows

if TYPE_CHECKING:
    from main_process.app import MainProcess

log = logging.getLogger("log_monitor.main")


class CommandHandlers:
    """One method per command the main process answers; see the module docstring."""

    def __init__(self, main: MainProcess) -> None:
        self._main = main

    async def handle(self, command: Command) -> IpcReply:
        """The ``ipc.host.IpcHost`` handler: look the command's type up in the table."""
        connection = self._main.connection
        if connection is None:
            return Failed(code="unavailable", message="the main process is still starting")
        handler = COMMAND_TABLE.get(type(command))
        if handler is None:
            return Failed(
                code="unsupported", message=f"{type(command).__name__} is not handled here"
            )
        return await handler(self, connection, command)

    async def connect(self, connection: ServerConnection, command: Connect) -> IpcReply:
        self._main.notifications.on_user_connect(time.monotonic())
        await connection.connect_to_server()
        return Ok()

    async def disconnect(self, connection: ServerConnection, command: Disconnect) -> IpcReply:
        self._main.notifications.on_user_disconnect(time.monotonic())
        await connection.disconnect_from_server()
        return Ok()

    async def login(self, connection: ServerConnection, command: Login) -> IpcReply:
        try:
            signed = await sign_in(
                connection.address.http_base,
                command.identifier,
                command.password,
                client_id=connection.client_id,
                keep_guest_token=connection.tokens.guest_token,
                proof_refresh_token=connection.tokens.refresh_token,
            )
        except SignInFailed as failure:
            log.info("sign-in as %s refused: %s", command.identifier, failure.code)
            return Failed(code=failure.code, message=failure.message)
        # On disk before use: a crash right after must not lose the new session.
        self._main.token_store.save(signed.tokens)
        await connection.set_tokens(signed.tokens)
        log.info("signed in as %s", signed.tokens.username)
        return Ok(data={"username": signed.tokens.username})

    async def logout(self, connection: ServerConnection, command: Logout) -> IpcReply:
        tokens = connection.tokens
        handed_back = await sign_out(
            connection.address.http_base, tokens.refresh_token, client_id=connection.client_id
        )
        self._main.token_store.save(signed_out(tokens, handed_back))
        await connection.set_tokens(signed_out(tokens, handed_back))
        log.info("signed out; continuing as guest")
        return Ok()

    async def open_window(self, connection: ServerConnection, command: OpenWindow) -> IpcReply:
        if not can_show_windows():
            return Failed(code="no_display", message="no display: windows cannot be shown here")
        return Ok(data={"host": self._main.windows.open()})

    async def report_window(self, connection: ServerConnection, command: ReportWindow) -> IpcReply:
        status = self._main.status
        if self._main.windows.on_report(command.state) and status.window_error is not None:
            status.window_error = None  # a window shows its page: the display works
            status.dirty()
        status.publish(command.state)
        return Ok()

    async def report_tray(self, connection: ServerConnection, command: ReportTray) -> IpcReply:
        self._main.windows.on_tray(command.state)
        self._main.status.publish(command.state)
        return Ok()

    async def control_windows(
        self, connection: ServerConnection, command: ControlWindows
    ) -> IpcReply:
        # The windows answer on their own topics (ReportWindow); the asker waits there
        # for the windows named here.
        windows_host = self._main.windows
        self._main.status.publish(command.control)
        return WindowsInventory(
            host=windows_host.host_pid,
            windows=tuple(windows_host.windows()),
            tray=windows_host.tray,
        )

    async def shutdown(self, connection: ServerConnection, command: Shutdown) -> IpcReply:
        # Answer first, then stop: the asker should hear that it worked.
        asyncio.get_running_loop().call_soon(self._main.stop)
        return Ok()


CommandHandler = Callable[[CommandHandlers, ServerConnection, Any], Awaitable[IpcReply]]

COMMAND_TABLE: Final[Mapping[type[Command], CommandHandler]] = {
    Connect: CommandHandlers.connect,
    Disconnect: CommandHandlers.disconnect,
    Login: CommandHandlers.login,
    Logout: CommandHandlers.logout,
    OpenWindow: CommandHandlers.open_window,
    ReportWindow: CommandHandlers.report_window,
    ReportTray: CommandHandlers.report_tray,
    ControlWindows: CommandHandlers.control_windows,
    Shutdown: CommandHandlers.shutdown,
}

# Answered by ``ipc.commands.CommandServer`` from the publisher's cache (``Ping`` always):
# they never reach the main process's handler while the host has its publisher.
ANSWERED_BY_IPC: Final[frozenset[type[Command]]] = frozenset({Ping, Snapshot, GetStatus})
