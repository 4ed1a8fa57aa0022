"""Where a request comes from, as far as the server can tell, and the endpoints only the
machine's own administrator may use (``GET /api/stats``).

The server trusts forwarding headers for nothing (uvicorn's ``proxy_headers`` is off: the
connection limits key connections by their real peer). A request that carries one was
forwarded by a proxy, so it is someone else's even when it arrives over loopback.

:class:`LocalOnlyPaths` answers a request for such a path from anyone else exactly as an
unknown path is answered (404 ``{"error": "not_found"}``), so the endpoint is not even
seen to exist. ``--public-stats`` lifts it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

FORWARDING_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")
NOT_FOUND_BODY = b'{"error":"not_found"}'


def is_direct_local_request(scope: Scope) -> bool:
    """From a loopback address, and not forwarded by a proxy."""
    client = scope.get("client")
    if not isinstance(client, list | tuple) or not client:
        return False
    try:
        peer = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    if not peer.is_loopback:
        return False
    return not any(name.lower() in FORWARDING_HEADERS for name, _ in scope.get("headers", []))


class LocalOnlyPaths:
    def __init__(self, app: App, paths: Collection[str], public: bool = False) -> None:
        self._app = app
        self._paths = frozenset(paths)
        self._public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self._public
            or scope["type"] != "http"
            or scope.get("path") not in self._paths
            or is_direct_local_request(scope)
        ):
            await self._app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                    (b"content-length", str(len(NOT_FOUND_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": NOT_FOUND_BODY})
