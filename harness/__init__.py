"""The real parts that tests and benchmarks both start: the reference server as a
process (``server_process``), the main process (``main_process_runner``), a bare
Socket.IO protocol client (``protocol_client``), process helpers (``processes``) and
the one polling wait (``waiting.wait_until``). Nothing here is a test."""
