"""The main process's command dispatch table: every ``Command`` in ``ipc/messages.py`` is
answered, by a row of ``COMMAND_TABLE`` or by the ipc layer itself, and a command reaches
the handler its row names."""

from __future__ import annotations

import inspect
import typing
from types import SimpleNamespace
from typing import Any, cast

from ipc.commands import CommandClient
from ipc.messages import Command, Connect, Disconnect, Failed, GetStatus, Ok, Ping, Snapshot
from main_process.command_handlers import ANSWERED_BY_IPC, COMMAND_TABLE, CommandHandlers
from tests.support.ipc_helpers import RecordingHandler, running_host

COMMAND_TYPES = frozenset(typing.get_args(Command))


def test_every_command_type_has_a_handler_or_is_answered_by_ipc() -> None:
    unanswered = COMMAND_TYPES - set(COMMAND_TABLE) - ANSWERED_BY_IPC
    assert not unanswered, f"no handler for {sorted(t.__name__ for t in unanswered)}"


def test_the_table_names_only_commands_and_each_once() -> None:
    assert set(COMMAND_TABLE) <= COMMAND_TYPES
    assert ANSWERED_BY_IPC <= COMMAND_TYPES
    assert not set(COMMAND_TABLE) & ANSWERED_BY_IPC


def test_every_handler_is_a_coroutine_method_taking_its_command() -> None:
    for command_type, handler in COMMAND_TABLE.items():
        assert inspect.iscoroutinefunction(handler), command_type.__name__
        assert getattr(CommandHandlers, handler.__name__) is handler
        annotation = inspect.signature(handler).parameters["command"].annotation
        assert annotation in (command_type, command_type.__name__), command_type.__name__


async def test_the_commands_ipc_answers_never_reach_the_handler() -> None:
    commands: list[Command] = [Ping(), Snapshot(), GetStatus()]
    assert {type(command) for command in commands} == ANSWERED_BY_IPC
    handler = RecordingHandler()
    async with running_host(handler) as host:
        client = CommandClient(host.endpoints.commands)
        try:
            for command in commands:
                await client.request(command)
        finally:
            await client.close()
    assert handler.commands == []


class _Recorder:
    """Stands in for the connection and the notification policy: records each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def connection_call(*args: object) -> None:
            self.calls.append(name)

        def policy_call(*args: object) -> None:
            self.calls.append(name)

        return connection_call if name.endswith("_server") else policy_call


async def test_a_command_reaches_the_handler_its_row_names() -> None:
    recorder = _Recorder()
    main = SimpleNamespace(connection=recorder, notifications=recorder)
    handlers = CommandHandlers(cast(Any, main))
    assert await handlers.handle(Connect()) == Ok()
    assert await handlers.handle(Disconnect()) == Ok()
    assert recorder.calls == [
        "on_user_connect",
        "connect_to_server",
        "on_user_disconnect",
        "disconnect_from_server",
    ]


async def test_without_a_connection_or_a_row_the_answer_is_failed() -> None:
    starting = CommandHandlers(cast(Any, SimpleNamespace(connection=None)))
    reply = await starting.handle(Connect())
    assert isinstance(reply, Failed)
    assert reply.code == "unavailable"
    running = CommandHandlers(cast(Any, SimpleNamespace(connection=_Recorder())))
    reply = await running.handle(Ping())
    assert isinstance(reply, Failed)
    assert reply.code == "unsupported"
