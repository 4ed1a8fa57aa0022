"""Integration tests: real parts on loopback (the reference server, ZeroMQ
sockets, the main process), in temporary directories."""
