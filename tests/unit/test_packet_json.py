"""The client's Socket.IO packets written with msgspec (``ClientPacket``): the same JSON
to a reader as python-socketio's own packets, with the standard library's encoder as the
fallback for what msgspec will not write, and python-socketio's ``Packet`` untouched."""

from __future__ import annotations

import json
from typing import Any

import socketio

from main_process.connection.packet_json import ClientPacket
from protocol import DEFAULT_NAMESPACE, SUBMIT_LOG_CHUNK

LINES = 'é ünïcödé "quoted" \\ back\tslash \u2028 ☃ 🎮\n' * 50


def encoded(packet_class: Any, data: Any) -> str:
    packet = packet_class(socketio.packet.EVENT, data=data, namespace=DEFAULT_NAMESPACE, id=7)
    text = packet.encode()
    assert isinstance(text, str)
    return text


def body(text: str) -> Any:
    prefix = f"2{DEFAULT_NAMESPACE},7"
    assert text.startswith(prefix)
    return json.loads(text[len(prefix) :])


def test_a_chunk_packet_reads_back_as_python_socketios_own() -> None:
    chunk = {
        "clientId": "c-1",
        "chunk": LINES,
        "chunkId": "c-1:1",
        "seq": 1,
        "source": {"path": "/logs/game.log", "offset": 2**40},
        "sentAt": 1764300000123,
    }
    ours = encoded(ClientPacket, [SUBMIT_LOG_CHUNK, chunk])
    theirs = encoded(socketio.packet.Packet, [SUBMIT_LOG_CHUNK, chunk])
    assert body(ours) == body(theirs) == [SUBMIT_LOG_CHUNK, chunk]
    assert "é" in ours  # UTF-8, not \\u escapes: the part that made the stdlib slow


def test_what_msgspec_will_not_write_goes_through_the_standard_library() -> None:
    # A path of undecodable bytes, as os.fsdecode gives it: a lone surrogate.
    chunk = {"clientId": "c-1", "chunk": "x\n", "source": {"path": "/logs/\udcff.log", "offset": 0}}
    ours = encoded(ClientPacket, [SUBMIT_LOG_CHUNK, chunk])
    assert ours == encoded(socketio.packet.Packet, [SUBMIT_LOG_CHUNK, chunk])
    assert body(ours)[1]["source"]["path"] == "/logs/\udcff.log"


def test_what_a_server_sends_is_read_as_before() -> None:
    wire = '3/client,7[{"ok":true,"chunkId":"c-1:1","note":"\\u00e9 NaN"}]'
    assert (
        ClientPacket(encoded_packet=wire).data == socketio.packet.Packet(encoded_packet=wire).data
    )


def test_python_socketios_packet_is_left_as_it_was() -> None:
    # The embedded server shares the process: it must keep the library's own encoder.
    assert socketio.packet.Packet.json is not ClientPacket.json
    assert socketio.packet.Packet.json.dumps([1, "é"], separators=(",", ":")) == '[1,"\\u00e9"]'
