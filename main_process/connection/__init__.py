"""The connection to the log server: an I/O-free state machine (``state``, built of
``phases``, ``delivery_window``, ``token_refresh``, ``live_socket`` and ``steps``, fed the
``events``) and the asyncio shell around python-socketio (``server_connection``, with
``driver``, ``socket_attempt`` and ``credential_saves``); sign-in, sign-out and refresh
over HTTP (``auth_client``); the reconnection delays (``backoff``)."""
