"""The server URL a user gives, read once for both the Socket.IO connection and the HTTP
API (PROTOCOL.md section 1).

Owns: which schemes are accepted and how ``ws``/``wss`` map to ``http``/``https``.
Must not: resolve, connect or guess a missing scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from protocol.text import ProtocolError

_HTTP_SCHEME_OF = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where the server is: the Socket.IO base URL and the HTTP API base."""

    socket_url: str
    http_base: str

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        """``parse_server_url``."""
        return parse_server_url(url)


def parse_server_url(url: str) -> ServerAddress:
    """Accept ``http(s)://`` and ``ws(s)://`` URLs; raise ``ProtocolError`` otherwise.

    The Socket.IO connection goes to the host and port; the HTTP API lives under the
    URL's path, if it has one."""
    parts = urlsplit(url.strip())
    scheme = _HTTP_SCHEME_OF.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ProtocolError(
            f"The server URL {url!r} must look like ws://host:port, wss://host, "
            "http://host:port or https://host."
        )
    path = parts.path.rstrip("/")
    return ServerAddress(
        socket_url=f"{scheme}://{parts.netloc}", http_base=f"{scheme}://{parts.netloc}{path}"
    )
