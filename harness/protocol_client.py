"""A bare Socket.IO client of the wire protocol, for tests of the server.

It is not the product's client: it does exactly what a test tells it, records every
server event in order, and exposes acknowledgements as awaitables, so a test can say
"send these 1,000 chunks back to back" or "send this malformed payload".
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlencode

import socketio

NAMESPACE = "/client"
SERVER_EVENTS = ("authenticated", "guestToken", "retry_auth", "pong", "processed_event")


class ProtocolClient:
    def __init__(self, url: str, client_id: str | None = None, token: str | None = None) -> None:
        self.url = url
        self.client_id = client_id or str(uuid.uuid4())
        self.token = token
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sio = socketio.AsyncClient(reconnection=False)
        for name in SERVER_EVENTS:
            self.sio.on(name, self._recorder(name), namespace=NAMESPACE)

    def _recorder(self, name: str) -> Any:
        async def record(data: Any = None) -> None:
            await self.events.put((name, data))

        return record

    async def connect(self) -> ProtocolClient:
        query = urlencode(
            {"clientId": self.client_id, "hostname": "test-host", "userAgent": "tests"}
        )
        await self.sio.connect(
            f"{self.url}?{query}",
            auth={"token": self.token} if self.token else {},
            namespaces=[NAMESPACE],
            transports=["websocket"],
            wait_timeout=10,
        )
        return self

    async def next_event(self, timeout: float = 10.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def expect(self, name: str, timeout: float = 10.0) -> Any:
        event, data = await self.next_event(timeout)
        assert event == name, f"expected {name}, got {event} {data!r}"
        return data

    async def send(self, event: str, *args: Any) -> asyncio.Future[Any]:
        """Emit (queued in order) with an acknowledgement; the future resolves to the ack."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def on_ack(*ack: Any) -> None:
            if not future.done():
                future.set_result(ack[0] if len(ack) == 1 else list(ack))

        # python-socketio sends a tuple as several arguments.
        payload: Any = args[0] if len(args) == 1 else tuple(args)
        await self.sio.emit(event, payload, namespace=NAMESPACE, callback=on_ack)
        return future

    def chunk(self, text: str, seq: int, **extra: Any) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "chunk": text,
            "chunkId": f"{self.client_id}:{seq}",
            "seq": seq,
            **extra,
        }

    async def submit(self, payload: Any, timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(await self.send("submit_log_chunk", payload), timeout)

    async def close(self) -> None:
        await self.sio.disconnect()


async def authenticated_guest(url: str, client_id: str | None = None) -> ProtocolClient:
    """Run the guest flow: connect bare, take the guest token, reconnect with it."""
    first = await ProtocolClient(url, client_id).connect()
    token = (await first.expect("guestToken"))["token"]
    await first.close()
    client = await ProtocolClient(url, first.client_id, token).connect()
    identity = await client.expect("authenticated")
    assert identity["identity"] == "guest"
    return client
