"""WebSocket compression is the server's choice: off unless ``--ws-compression``.

socket.io-client (the original Electron client, browsers) offers permessage-deflate on
every connection; compressing each message costs CPU at both ends and a compressor per
connection, so the reference server accepts the offer only when asked to
(bench/server_load.py measured it). Both tests offer compression from a real WebSocket
client to the real server and look at what the handshake agreed, then speak Engine.IO and
Socket.IO through the connection.
"""

from __future__ import annotations

from pathlib import Path

from websockets.sync.client import ClientConnection, connect

from harness.server_process import ServerProcess

ENGINE_IO_PATH = "/socket.io/?EIO=4&transport=websocket"
CLIENT_ID = "5b0c6f5e-4f0e-4d6b-9a57-6c1f3f0a3d21"


def _open_offering_compression(server: ServerProcess) -> ClientConnection:
    url = server.url.replace("http://", "ws://", 1) + ENGINE_IO_PATH + f"&clientId={CLIENT_ID}"
    # compression="deflate" is websockets' default; said here because it is the point.
    return connect(url, compression="deflate", open_timeout=10)


def _agreed_extensions(ws: ClientConnection) -> str | None:
    assert ws.response is not None
    return ws.response.headers.get("Sec-WebSocket-Extensions")


def _guest_token_arrives(ws: ClientConnection) -> None:
    """Engine.IO's open packet, then a tokenless Socket.IO connect answered with a guest
    token (the protocol's first contact), all through this connection."""
    opened = ws.recv(timeout=10)
    assert isinstance(opened, str), opened
    assert opened.startswith("0{"), opened
    ws.send("40/client,{}")
    while True:
        message = ws.recv(timeout=10)
        assert isinstance(message, str), message
        if message.startswith('42/client,["guestToken"'):
            return


def test_compression_is_refused_by_default(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server").start()
    try:
        with _open_offering_compression(server) as ws:
            assert _agreed_extensions(ws) is None
            _guest_token_arrives(ws)
    finally:
        server.stop()


def test_ws_compression_accepts_the_offer(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", "--ws-compression").start()
    try:
        with _open_offering_compression(server) as ws:
            agreed = _agreed_extensions(ws)
            assert agreed is not None
            assert agreed.startswith("permessage-deflate"), agreed
            _guest_token_arrives(ws)
    finally:
        server.stop()
