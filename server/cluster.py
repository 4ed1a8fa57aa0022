"""Several server nodes as one: python-socketio's Redis client manager (``--redis``), and
the end of a user's sessions reaching every node at once.

Nodes share their database (PostgreSQL); a client may connect to any node (behind a load
balancer; websocket-only clients need no sticky sessions). What one node cannot see by
itself is a connection held by another: a ``revoke`` or ``delete-user``, or a refresh
token presented twice (the session is revoked), must end the sessions the user holds on
every node, not at their next chunk but at once.

So every user connection is in two Socket.IO rooms, its user's (:func:`user_room`) and its
session's (:func:`session_room`), and ending sessions is an emit of the internal event
:data:`SESSIONS_ENDED` to that room. With ``--redis``, the server's client manager is
:class:`ClusterManager` (python-socketio's ``AsyncRedisManager``): an emit is published on
the Redis channel :data:`CHANNEL` and handled by every node, which ends its own
connections in the room (the namespace's ``end_sessions``: ``retry_auth``
``token_revoked``, no more chunks taken). The event never reaches a client. The command
line's ``revoke``/``delete-user --redis`` publish the same emit (:func:`announce_sessions_ended`)
with a write-only manager, as python-socketio documents for emitting from another process.

Without ``--redis`` the manager is python-socketio's default, and the event is handled in
the process only. Emits to one connection (acks' companions: ``authenticated``, ``pong``,
``retry_auth``) are sent with ``ignore_queue``: that connection is on this node, and
publishing them would make every node decode every pong.

Redis carries no secret: events name rooms (user and session ids) and a reason.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import socketio

from protocol import DEFAULT_NAMESPACE

log = logging.getLogger("log_monitor_server.cluster")

CHANNEL = "log-monitor-server"
SESSIONS_ENDED = "log-monitor-server:sessions-ended"
NAMESPACE = DEFAULT_NAMESPACE

SessionsEnded = Callable[[str, str], int]
"""``(room, reason) -> connections ended``: what a node does when it hears the event."""


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def session_room(session_id: str) -> str:
    return f"session:{session_id}"


def shown_redis_url(url: str) -> str:
    """The Redis URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


class ClusterManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """The Redis client manager, with :data:`SESSIONS_ENDED` handled by the node instead
    of being sent to clients."""

    def __init__(self, url: str, write_only: bool = False) -> None:
        super().__init__(url, channel=CHANNEL, write_only=write_only)
        self.on_sessions_ended: SessionsEnded | None = None

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("event") != SESSIONS_ENDED:
            await super()._handle_emit(message)
            return
        room = message.get("room")
        data = message.get("data")
        reason = "token_revoked"
        if isinstance(data, list) and data and isinstance(data[0], dict):
            reason = str(data[0].get("reason", reason))
        if isinstance(room, str) and self.on_sessions_ended is not None:
            ended = self.on_sessions_ended(room, reason)
            if ended:
                log.info("ended %d connection(s) in %s (%s)", ended, room, reason)


async def end_sessions_everywhere(
    sio: socketio.AsyncServer, local: SessionsEnded, room: str, reason: str = "token_revoked"
) -> None:
    """End the sessions in ``room`` on every node (this one included)."""
    if isinstance(sio.manager, ClusterManager):
        await sio.manager.emit(SESSIONS_ENDED, {"reason": reason}, room=room, namespace=NAMESPACE)
    else:
        local(room, reason)


async def announce_sessions_ended(redis_url: str, room: str, reason: str = "token_revoked") -> int:
    """Publish the end of the sessions in ``room`` from outside the servers; returns how
    many nodes heard it. Raises ``ConnectionError`` when Redis cannot be reached.

    The message is the one python-socketio's pub/sub managers publish for an emit (what a
    write-only manager's ``emit`` sends), published here directly because Redis's answer,
    the number of subscribers that got it, is worth saying, and the manager drops it."""
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError

    message = {
        "method": "emit",
        "event": SESSIONS_ENDED,
        "data": [{"reason": reason}],
        "binary": False,
        "namespace": NAMESPACE,
        "room": room,
        "skip_sid": None,
        "callback": None,
        "host_id": uuid.uuid4().hex,
    }
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        return int(await client.publish(CHANNEL, json.dumps(message)))
    except (RedisError, OSError) as exc:
        raise ConnectionError(
            f"cannot reach Redis at {shown_redis_url(redis_url)}: {exc}"
        ) from None
    finally:
        await client.aclose()
