"""The contract between the main process and its viewers, over ZeroMQ with msgspec.

Modules, one job each:

* ``messages``: every message type (tagged msgspec Structs), topics, typed codecs.
* ``sequence``: per-topic sequence numbers: repeats, gaps, restarts (no I/O).
* ``publisher``: ``StatusPublisher``, an XPUB with a Last Value Cache and heartbeats.
* ``subscriber``: ``Subscriber`` (asyncio) and ``SubscriberThread`` (GUI windows).
* ``commands``: ``CommandServer`` (ROUTER), ``CommandClient`` and ``SyncCommandClient``.
* ``endpoints``: the private runtime directory, socket addresses, CURVE keys.
* ``instance``: ``InstanceLock`` (single instance per data directory) and the handoff.
* ``host``: ``IpcHost`` wiring for the main process, ``connect_*`` for viewers.
* ``inspection``: asking the windows something (``log-monitor windows``, ``screenshot``).
* ``host_launch``: the renderer host's command line and exit statuses, for both sides.
* ``atomic_file``: ``write_file_atomically``, the one way any package replaces a file.
"""
