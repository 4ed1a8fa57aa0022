"""How ``log-monitor run`` imports python-socketio: as a client, without the Redis client
managers only a server uses.

``socketio``'s package imports every client manager a server may use, among them its
Redis ones, which import ``redis`` whenever it is installed (it is, for the reference
server's ``--redis``): ~90 ms of a start that should take under half a second, most of it
``redis.cluster``. The main process is a Socket.IO client and never makes a client
manager: the embedded server it may run is started without ``--redis``.

So ``run`` imports ``socketio`` through ``import_client_socketio`` before anything else
of the main process does: ``redis`` is held out of ``sys.modules`` meanwhile
(python-socketio imports it under ``try``/``except ImportError``, and its Redis managers
then say that redis is not installed if made), and let in again at once, so a later
``import redis`` works as usual.

Must not: hold out a module anything in the main process uses, or hold one out beyond
the import of ``socketio``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from typing import Final

# What python-socketio imports for its server-side client managers only.
SERVER_ONLY_MODULES: Final = ("redis",)


@contextlib.contextmanager
def modules_held_out(names: tuple[str, ...]) -> Iterator[None]:
    """While inside, ``import NAME`` raises ``ImportError`` for each of ``names`` not
    imported yet (``None`` in ``sys.modules`` is Python's own way to say so)."""
    held = [name for name in names if name not in sys.modules]
    for name in held:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in held:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def import_client_socketio() -> None:
    """Import ``socketio`` without ``SERVER_ONLY_MODULES`` (nothing to do when it is
    imported already)."""
    if "socketio" in sys.modules:
        return
    with modules_held_out(SERVER_ONLY_MODULES):
        importlib.import_module("socketio")
