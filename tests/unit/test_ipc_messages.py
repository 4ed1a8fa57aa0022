"""ipc message types: every one round-trips through its typed decoder, names are
camelCase on the wire, nothing carries a token, and Login never shows its password."""

from __future__ import annotations

import json
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc import messages
from ipc.messages import (
    COMMAND_DECODER,
    PUBLISHED_DECODER,
    REPLY_DECODER,
    Command,
    Login,
    Published,
    Reply,
    Status,
    encode,
    to_json,
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_SCALARS = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(st.text(), JSON_VALUES, max_size=5)

ALL_TYPES: list[type[msgspec.Struct]] = [
    *get_args(Published),
    *get_args(Command),
    *get_args(Reply),
]


def _strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    overrides: dict[str, st.SearchStrategy[Any]] = {}
    for field in msgspec.structs.fields(cls):
        if field.type is int:
            overrides[field.name] = INT64
        if field.type == (int | None):
            overrides[field.name] = st.none() | INT64
        if field.type == dict[str, int]:
            overrides[field.name] = st.dictionaries(st.text(), INT64, max_size=5)
        if field.type == dict[str, Any] or field.type == (dict[str, Any] | None):
            overrides[field.name] = (
                JSON_OBJECTS if field.type == dict[str, Any] else st.none() | JSON_OBJECTS
            )
    return st.builds(cls, **overrides)


# Registered so nested messages (SnapshotEntry.message, ReportWindow.state) use them too:
# free-form dict fields get JSON objects, integers stay within msgpack's 64 bits.
def _register(cls: type[msgspec.Struct]) -> None:
    st.register_type_strategy(cls, st.deferred(lambda: _strategy(cls)))


NESTED_TYPES: list[type[msgspec.Struct]] = [messages.LogLine, messages.SnapshotEntry]
for _cls in [*ALL_TYPES, *NESTED_TYPES]:
    _register(_cls)

ANY_MESSAGE = st.one_of([st.from_type(cls) for cls in ALL_TYPES])


def _decoder_for(message: msgspec.Struct) -> msgspec.msgpack.Decoder[Any]:
    if isinstance(message, get_args(Published)):
        return PUBLISHED_DECODER
    if isinstance(message, get_args(Command)):
        return COMMAND_DECODER
    return REPLY_DECODER


@settings(max_examples=400, deadline=None)
@given(ANY_MESSAGE)
def test_every_message_round_trips_through_its_typed_decoder(message: Any) -> None:
    decoded = _decoder_for(message).decode(encode(message))
    assert type(decoded) is type(message)
    assert msgspec.structs.asdict(decoded) == msgspec.structs.asdict(message)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
def test_every_type_is_frozen_and_tagged(cls: type[msgspec.Struct]) -> None:
    config = cls.__struct_config__
    assert config.frozen
    assert config.tag_field == "type"
    assert isinstance(config.tag, str)


def test_tags_are_unique_within_each_union() -> None:
    for union in (Published, Command, Reply):
        tags = [cls.__struct_config__.tag for cls in get_args(union)]
        assert len(tags) == len(set(tags)), tags


def test_no_message_type_has_a_token_field() -> None:
    for cls in ALL_TYPES:
        for field in msgspec.structs.fields(cls):
            assert "token" not in field.name.lower(), f"{cls.__name__}.{field.name}"
            assert "token" not in field.encode_name.lower()


def test_status_wire_names_are_camel_case() -> None:
    document = json.loads(
        to_json(Status(state="disconnected", next_retry_ms=1500, client_id="c", dead_lettered=2))
    )
    assert document["type"] == "status"
    assert document["nextRetryMs"] == 1500
    assert document["clientId"] == "c"
    assert document["deadLettered"] == 2
    assert "lastError" in document
    assert "next_retry_ms" not in document


def test_status_state_accepts_exactly_the_four_states() -> None:
    states: tuple[messages.ConnectionStateName, ...] = get_args(messages.ConnectionStateName)
    assert states == ("disconnected", "connecting", "connected", "error")
    for state in states:
        assert PUBLISHED_DECODER.decode(encode(Status(state=state))) == Status(state=state)
    bad = msgspec.msgpack.encode({"type": "status", "state": "reconnecting"})
    with pytest.raises(msgspec.ValidationError):
        PUBLISHED_DECODER.decode(bad)


def test_wrong_field_type_and_unknown_tag_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.identifier"):
        COMMAND_DECODER.decode(
            msgspec.msgpack.encode({"type": "login", "identifier": 5, "password": "x"})
        )
    with pytest.raises(msgspec.ValidationError):
        COMMAND_DECODER.decode(msgspec.msgpack.encode({"type": "format_disk"}))
    with pytest.raises(msgspec.ValidationError):
        # A reply is not a command.
        COMMAND_DECODER.decode(encode(messages.Ok()))


@given(st.text(min_size=1), st.text(min_size=4))
def test_login_password_never_in_repr_or_str(identifier: str, password: str) -> None:
    password = "pw:" + password
    login = Login(identifier=identifier, password=password)
    for shown in (repr(login), str(login), f"{login}", repr([login]), repr({"c": login})):
        assert password not in shown
    assert dict(login.__rich_repr__())["password"] == "<hidden>"
    # The value itself is intact for the main process.
    decoded = COMMAND_DECODER.decode(encode(login))
    assert isinstance(decoded, Login)
    assert decoded.password == password
