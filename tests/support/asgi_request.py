"""One HTTP request through the reference server's ASGI app, with no socket
(``asgi_request``), and what the app answered (``Answer``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.app import ServerApp


@dataclass
class Answer:
    """What the app sent back: the status, the headers and the whole body."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def asgi_request(
    app: ServerApp,
    method: str,
    path: str,
    parts: list[bytes],
    content_length: bool = True,
) -> Answer:
    """One HTTP request through the ASGI app, the body delivered in ``parts``."""
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts or [b""])
    ]
    headers = [(b"content-type", b"application/json")]
    if content_length:
        headers.append((b"content-length", str(sum(map(len, parts))).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5324),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app.asgi(scope, receive, send)
    assert sent, "the app sent nothing"
    assert sent[0]["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(sent[0]["status"], dict(sent[0]["headers"]), body)
