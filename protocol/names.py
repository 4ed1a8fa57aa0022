"""The names both sides agree on: where Socket.IO is mounted, the namespace, the events
and the HTTP auth endpoints (PROTOCOL.md sections 1 to 5).

Owns: every string the client and the server must spell the same way.
Must not: hold behaviour; a name used by one side only stays with that side.
"""

from __future__ import annotations

DEFAULT_SOCKETIO_PATH = "/socket.io/"
DEFAULT_NAMESPACE = "/client"

# Events from the server (section 3).
AUTHENTICATED = "authenticated"
GUEST_TOKEN = "guestToken"
RETRY_AUTH = "retry_auth"
PONG = "pong"
PROCESSED_EVENT = "processed_event"

# Events from the client (section 4).
SUBMIT_LOG_CHUNK = "submit_log_chunk"
PING = "ping"

# The HTTP auth API (section 5), under the server URL's HTTP base.
LOGIN_PATH = "/api/auth/login"
REFRESH_PATH = "/api/auth/refresh"
REGISTER_GUEST_PATH = "/api/auth/register-guest"
LOGOUT_PATH = "/api/auth/logout"
