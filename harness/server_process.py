"""The real reference server as a child process, for tests and benchmarks.

:class:`ServerProcess` starts ``python -m server serve --port 0`` on loopback with a data
dir of the caller's, waits (with a deadline) for the ready file the server writes once it
listens, and stops it by its PID: politely with SIGTERM, or with SIGKILL to test crashes.
``descriptor_limit`` starts it with that RLIMIT_NOFILE (soft and hard), so a test reaches
the descriptor limit with a few hundred connections instead of tens of thousands.
``database`` (a ``postgresql://`` URL) runs it, and its command line (``run_cli``, ``dump``),
on PostgreSQL instead of the data dir's SQLite file; ``redis`` joins it to other nodes.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from harness.waiting import wait_until

REPOSITORY = Path(__file__).resolve().parent.parent


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *extra_args: str,
        port: int = 0,
        descriptor_limit: int | None = None,
        database: str | None = None,
        redis: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database = database
        self.redis = redis
        self.extra_args = list(extra_args)
        self.port = port
        self.descriptor_limit = descriptor_limit
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        ready = self.data_dir.parent / f"{self.data_dir.name}-ready.json"
        ready.unlink(missing_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--ready-file",
                str(ready),
                "--verbose",
                *(["--database", self.database] if self.database else []),
                *(["--redis", self.redis] if self.redis else []),
                *self.extra_args,
            ],
            cwd=REPOSITORY,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if self.descriptor_limit is None else self._limit_descriptors,
        )
        process = self.process

        def is_ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {self.log_text()}")
            return ready.exists()

        wait_until(is_ready, timeout, "the server's ready file")
        self.url = str(json.loads(ready.read_text())["url"])
        # Restart on the same port, so clients that remember the URL find it again.
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def _limit_descriptors(self) -> None:
        # Runs in the child between fork and exec.
        assert self.descriptor_limit is not None
        limit = self.descriptor_limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, kill: bool = False, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def run_cli(
        self, *args: str, input_text: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return server_cli(self.data_dir, *args, input_text=input_text, database=self.database)

    def dump(self, client_id: str | None = None, *, as_json: bool = False) -> bytes:
        """What the server stored (of ``client_id``): the chunks' text one after another,
        or with ``as_json`` one JSON object per chunk (``dump --json``)."""
        args = ["dump"] + (["--client-id", client_id] if client_id else [])
        if as_json:
            args.append("--json")
        result = self.run_cli(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout


def server_cli(
    data_dir: Path, *args: str, input_text: str | None = None, database: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    command, *rest = args
    on_database = ["--database", database] if database else []
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            command,
            "--data-dir",
            str(data_dir),
            *on_database,
            *rest,
        ],
        cwd=REPOSITORY,
        input=None if input_text is None else input_text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
