"""The reference log-monitor-server.

It speaks the wire protocol of ``shared/PROTOCOL.md`` (Socket.IO namespace ``/client`` plus
the HTTP auth API) and stores every chunk it acknowledges in SQLite. It exists for two
reasons: the client's tests run against it, and ``log-monitor run`` starts it as the
embedded default when no ``--server`` is given.
"""
