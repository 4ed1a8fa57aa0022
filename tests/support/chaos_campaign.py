"""The fault campaign (``make chaos``): real server, real client, faults, and a line count.

Owns the campaign: its rounds, how each fault is injected and healed, the comparison of
what the server stored with what the writers wrote, and the one table it prints.

    python -m tests.support.chaos_campaign [--quick | --full] [--seed N] [--kind K]... [--keep]
                                   [--no-mount]

A *round* is built from nothing: a fresh server data dir, a fresh client data dir, log
files of its own. Writer threads append numbered lines (``00000042 w1 …``) to the round's
files while one kind of fault is injected, one or several times; the fault is healed,
the writers stop, the client drains its spool, and the server's ``dump --json`` (per
source file, in ``seq`` order) is compared line by line with the files. Per file:

- *lost*: numbers 1..N the writer wrote whose exact line the server does not hold
  (a stored line that is not exactly a written line counts as garbage and fails the
  round too);
- *duplicated*: stored copies beyond the first of a line;
- *out of order*: lines stored after a line with a larger number.

Fault kinds (``KINDS``) and how each is injected and healed:

- ``main-kill``: SIGKILL of ``log-monitor run`` at random moments (during start-up,
  mid-read, mid-flush), restarted each time;
- ``server-kill``: SIGKILL of the server, restarted on the same port with the same data;
- ``net-cut``: the client talks through :class:`tests.support.chaos_proxy.ChaosProxy`; ``cut``
  closes both sides of every connection (and refuses new ones) for a moment, then
  ``pass``; each cut must be noticed and the client connected again before the next;
- ``blackhole``: the proxy stops moving bytes without closing anything; the client's
  heartbeat / ack timeout must notice (the status leaves ``connected``) before ``pass``;
- ``auth``: a server with ``--access-ttl 2`` (full mode: 2 or 3) and a signed-in user:
  the access token expires every few seconds while chunks flow (each expiry is a
  ``retry_auth`` and a refresh), and ``revoke USER`` mid-stream makes the next refresh
  fail: the client must fall back to guest and keep delivering; then it signs in again
  and the storm repeats;
- ``disk-full``: the client's data dir is a 16 MiB tmpfs mounted for the round (a
  loop-mounted ext4 image if tmpfs cannot be mounted; a tiny ``--spool-max-mb`` as the
  last fallback or with ``--no-mount``, reported as such) while the proxy refuses every
  connection; the writer writes more than fits, the spool's disk fills, then the proxy
  passes again and the spool drains: nothing may be lost (the file is the buffer);
- ``host-kill``: the main process runs with real windows (``QT_QPA_PLATFORM=offscreen``)
  in one renderer host; once they are ready and updating, the host gets SIGKILL; the
  main process must keep running and shipping, and start the host again with the same
  number of windows, each showing the status; the dead host's render processes must go.
- ``page-kill``: the same, but SIGKILL goes to one page's render process (a
  QtWebEngineProcess child of the host): that page must be reloaded and show the status
  again, in the same host, while the other window is not reloaded.

Every wait has a deadline; sleeps are only the random delays before a fault. Every
process, mount and thread the campaign starts is ended on the way out, failure or not.
Quick mode runs each kind once (CI, ``tests/system/test_chaos.py``); full mode runs rounds for
ten minutes, kinds in random order from a shuffled bag (rounds 1-7 hold every kind once,
so do rounds 8-14, ...) and more faults per round. Exit status 1 when any line was lost,
duplicated or reordered, or a fault could not be injected or was not noticed.

Must not: change the product's behaviour or reach into its internals (it drives the
real command lines, ipc and the server's CLI only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.main_process_runner import MainProcessRunner, log_monitor
from harness.processes import alive, descendants
from harness.server_process import REPOSITORY, ServerProcess
from harness.waiting import wait_until
from ipc.inspection import InspectionError, ask_windows
from ipc.messages import WindowAnswer
from tests.support.chaos_proxy import ChaosProxy

KINDS = (
    "main-kill",
    "server-kill",
    "net-cut",
    "blackhole",
    "auth",
    "disk-full",
    "host-kill",
    "page-kill",
)
FULL_SECONDS = 600.0
USER = "chaos"
PASSWORD = "chaos horse battery staple"
# Short timers so a dead connection is noticed in seconds, not the default 30 s.
CLIENT_TIMERS = ("--ping-interval", "1", "--silence-timeout", "3", "--ack-timeout", "3")
DISK_MIB = 16
# A reconnect may wait out a full backoff step (capped at 30 s) after a long outage.
RECONNECT_TIMEOUT = 45.0
DRAIN_TIMEOUT = 90.0
# Longer than the largest backoff step (30 s): a client waiting to reconnect is not stuck.
STALL_TIMEOUT = 35.0
WINDOW_START_TIMEOUT = 60.0
LINE = re.compile(r"^(\d{8}) ")


class RoundProblem(Exception):
    """A fault could not be injected, was not noticed, or the product misbehaved."""


# ------------------------------------------------------------------------------ writers


class LineWriter:
    """Appends numbered lines (``%08d <tag> <payload>``) to one file from a thread.

    ``burst`` lines at a time, then a pause of ``pause`` seconds (pacing, not
    synchronisation). With ``limit_bytes`` it stops by itself after writing that much.
    """

    def __init__(
        self,
        path: Path,
        tag: str,
        seed: str,
        *,
        burst: int = 20,
        pause: float = 0.005,
        payload: tuple[int, int] = (0, 80),
        limit_bytes: int | None = None,
    ) -> None:
        self.path = path
        self.tag = tag
        self.burst = burst
        self.pause = pause
        self.payload = payload
        self.limit_bytes = limit_bytes
        self.lines_written = 0
        self.bytes_written = 0
        self.error: BaseException | None = None
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer {tag}", daemon=True)

    def start(self) -> LineWriter:
        self.path.touch()
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as log:
                while not self._stop.is_set():
                    lines = []
                    for _ in range(self._random.randint(1, self.burst)):
                        self.lines_written += 1
                        width = self._random.randint(*self.payload)
                        lines.append(f"{self.lines_written:08d} {self.tag} ünïcødé {'x' * width}\n")
                    text = "".join(lines)
                    log.write(text)
                    log.flush()
                    self.bytes_written += len(text.encode("utf-8"))
                    if self.limit_bytes is not None and self.bytes_written >= self.limit_bytes:
                        return
                    self._stop.wait(self.pause)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# ------------------------------------------------------------------------------ results


@dataclass
class FileCount:
    """The comparison of one followed file with what the server stored from it."""

    written: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    garbage: int = 0


def compare_lines(expected: list[str], stored: list[str]) -> FileCount:
    """Count lost, duplicated and reordered lines of one file (see the module docstring)."""
    count = FileCount(written=len(expected), stored=len(stored))
    seen: Counter[int] = Counter()
    highest = 0
    for line in stored:
        match = LINE.match(line)
        number = int(match.group(1)) if match else 0
        if not 1 <= number <= len(expected) or expected[number - 1] != line:
            count.garbage += 1
            continue
        seen[number] += 1
        if seen[number] > 1:
            count.duplicated += 1
            continue
        if number < highest:
            count.out_of_order += 1
        highest = max(highest, number)
    count.lost = len(expected) - len(seen)
    return count


@dataclass
class RoundResult:
    index: int
    kind: str
    faults: Counter[str] = field(default_factory=Counter)
    written: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    garbage: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.duplicated or self.out_of_order or self.garbage or self.problems
        )

    def add(self, count: FileCount) -> None:
        self.written += count.written
        self.stored += count.stored
        self.lost += count.lost
        self.duplicated += count.duplicated
        self.out_of_order += count.out_of_order
        self.garbage += count.garbage


# ------------------------------------------------------------------------------ helpers


def kill_window_process(pid: int) -> None:
    """SIGKILL a window process or one of its Qt helpers, if ``pid`` is still one of them."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"renderer" in command or b"QtWebEngine" in command:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def free_bytes(path: Path) -> int:
    # f_bfree, not f_bavail: the campaign mounts as root, and root may use ext4's reserve.
    stats = os.statvfs(path)
    return stats.f_bfree * stats.f_frsize


class WindowedMainProcess(MainProcessRunner):
    """``log-monitor run`` with real windows (offscreen Qt) instead of ``--headless``."""

    windows = 2

    def start(self, stdin: int | None = subprocess.DEVNULL, wait: bool = True) -> MainProcessRunner:
        env = dict(os.environ)
        for name in ("DISPLAY", "WAYLAND_DISPLAY"):
            env.pop(name, None)
        env["QT_QPA_PLATFORM"] = "offscreen"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "main_process",
                "run",
                "--windows",
                str(self.windows),
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            cwd=REPOSITORY,
            stdin=stdin,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        if wait:
            self.wait_for_status(lambda s: True, 30, "the first status")
        return self


@dataclass
class Mounted:
    """A size-limited filesystem the round mounted on the client's data dir."""

    how: str
    path: Path
    image: Path | None = None


def mount_small_filesystem(path: Path, mib: int) -> Mounted | None:
    """Mount a ``mib`` MiB filesystem on ``path``: tmpfs, else a loop ext4 image; else None."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None
    tmpfs = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if tmpfs.returncode == 0:
        return Mounted("tmpfs", path)
    image = path.parent / f"{path.name}.ext4"
    with image.open("wb") as handle:
        handle.truncate(mib * 1024 * 1024)
    made = subprocess.run(
        ["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, timeout=60, check=False
    )
    if made.returncode == 0:
        loop = subprocess.run(
            ["mount", "-o", "loop", str(image), str(path)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if loop.returncode == 0:
            os.chmod(path, 0o700)
            return Mounted("loop ext4", path, image)
    image.unlink(missing_ok=True)
    return None


def unmount(mounted: Mounted) -> None:
    done = subprocess.run(
        ["umount", str(mounted.path)], capture_output=True, timeout=30, check=False
    )
    if done.returncode != 0:
        # Something still holds a file there (a process that outlived its kill): detach
        # it so the campaign never leaves a mount behind.
        subprocess.run(
            ["umount", "-l", str(mounted.path)], capture_output=True, timeout=30, check=False
        )
    if mounted.image is not None:
        mounted.image.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ a round


class Round:
    """One round's parts and the steps every kind shares; ``cleanup`` ends them all."""

    def __init__(
        self, index: int, kind: str, root: Path, rng: random.Random, full: bool, mount: bool
    ) -> None:
        self.index = index
        self.mount = mount
        self.kind = kind
        self.rng = rng
        self.full = full
        self.dir = root / f"round-{index:03d}-{kind}"
        self.dir.mkdir(parents=True)
        self.server_dir = self.dir / "server"
        self.client_dir = self.dir / "client"
        self.logs_dir = self.dir / "logs"
        self.logs_dir.mkdir()
        self.result = RoundResult(index, kind)
        self.server: ServerProcess | None = None
        self.proxy: ChaosProxy | None = None
        self.client: MainProcessRunner | None = None
        self.writers: list[LineWriter] = []
        self.mounted: Mounted | None = None
        self.window_pids: set[int] = set()

    # parts

    def start_server(self, *args: str) -> ServerProcess:
        self.server = ServerProcess(self.server_dir, *args).start()
        return self.server

    def start_proxy(self) -> ChaosProxy:
        assert self.server is not None
        self.proxy = ChaosProxy("127.0.0.1", self.server.port).start()
        return self.proxy

    def client_args(self, url: str, *extra: str) -> list[str]:
        paths = [str(writer.path) for writer in self.writers]
        window = str(self.rng.choice((1, 4, 8, 16)))
        return [*paths, "--server", url, *CLIENT_TIMERS, "--window", window, *extra]

    def add_writers(self, count: int, **options: Any) -> list[LineWriter]:
        made = []
        for _ in range(count):
            number = len(self.writers) + 1
            path = (self.logs_dir / f"app-{number}.log").resolve()
            path.touch()
            writer = LineWriter(path, f"w{number}", f"{self.rng.random()}", **options)
            self.writers.append(writer)
            made.append(writer)
        return made

    def start_writers(self) -> None:
        for writer in self.writers:
            writer.start()

    def stop_writers(self) -> None:
        for writer in self.writers:
            writer.stop()
        for writer in self.writers:
            if writer.error is not None:
                raise RoundProblem(f"writer {writer.tag} failed: {writer.error!r}")

    def status(self) -> dict[str, Any]:
        assert self.client is not None
        status = self.client.status()
        if status is None:
            raise RoundProblem("the main process did not answer a status request")
        return status

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> float:
        assert self.client is not None
        client = self.client
        start = time.monotonic()
        try:
            client.wait_for_status(predicate, timeout, what)
        except TimeoutError as exc:
            raise RoundProblem(str(exc)) from None
        return time.monotonic() - start

    def wait_connected(self, timeout: float = RECONNECT_TIMEOUT, what: str = "connected") -> float:
        return self.wait_status(lambda s: s["state"] == "connected", timeout, what)

    def pause(self, low: float, high: float) -> None:
        """A random delay before the next fault: where in the stream it lands."""
        time.sleep(self.rng.uniform(low, high))

    # the end of every round

    def drain_and_compare(self) -> None:
        """Stop writing, wait for the spool to drain, stop the client, compare the dump."""
        self.stop_writers()
        expected_bytes = sum(writer.path.stat().st_size for writer in self.writers)
        assert self.client is not None
        try:
            waited = self.wait_drained(expected_bytes)
            self.result.notes.append(f"drained in {waited:.1f} s")
        except RoundProblem as exc:
            with contextlib.suppress(Exception):
                self.result.notes.append(f"last status: {self.status()}")
            self.result.problems.append(str(exc))
        code = self.client.stop()
        if code != 0:
            self.result.problems.append(f"the main process exited with status {code} on SIGTERM")
        self.compare()

    def wait_drained(self, expected_bytes: int) -> float:
        """Wait until every written byte is acknowledged and the spool is empty.

        Gives up at ``DRAIN_TIMEOUT``, or earlier when nothing moved (spool and sent
        counters) for ``STALL_TIMEOUT``: a stuck client need not cost the whole deadline.
        """
        assert self.client is not None
        start = time.monotonic()
        last: tuple[int, int, int] | None = None
        moved = start
        while True:
            # None: no answer this time (a busy main process); the deadlines still hold.
            status = self.client.status() or {
                "bufferedChunks": -1,
                "bufferedBytes": -1,
                "sentBytes": -1,
            }
            if status["bufferedChunks"] == 0 and status["sentBytes"] >= expected_bytes:
                return time.monotonic() - start
            now = time.monotonic()
            counters = (status["bufferedChunks"], status["bufferedBytes"], status["sentBytes"])
            if counters != last:
                last, moved = counters, now
            what = f"every written byte ({expected_bytes}) acknowledged"
            if now - moved > STALL_TIMEOUT:
                raise RoundProblem(f"{what}: nothing moved for {STALL_TIMEOUT:g} s")
            if now - start > DRAIN_TIMEOUT:
                raise RoundProblem(f"{what}: not within {DRAIN_TIMEOUT:g} s")
            time.sleep(0.1)

    def compare(self) -> None:
        assert self.server is not None
        client_id = (self.client_dir / "client-id").read_text().strip()
        dumped = self.server.run_cli("dump", "--client-id", client_id, "--json")
        if dumped.returncode != 0:
            raise RoundProblem(f"dump failed: {dumped.stderr.decode(errors='replace')}")
        by_path: dict[str, list[str]] = {}
        for raw in dumped.stdout.splitlines():
            record = json.loads(raw)
            source = record.get("source") or {}
            by_path.setdefault(str(source.get("path")), []).append(record["chunk"])
        for writer in self.writers:
            expected = writer.path.read_text(encoding="utf-8").splitlines()
            stored = "".join(by_path.pop(str(writer.path), [])).splitlines()
            self.result.add(compare_lines(expected, stored))
        for path, chunks in by_path.items():
            stray = "".join(chunks).splitlines()
            self.result.garbage += len(stray)
            self.result.stored += len(stray)
            self.result.problems.append(f"{len(stray)} lines stored from unexpected source {path}")
        if self.result.garbage:
            self.result.problems.append(f"{self.result.garbage} stored lines match no written line")

    def cleanup(self) -> None:
        for writer in self.writers:
            writer.stop()
        if self.client is not None:
            self.client.ensure_stopped()
        for pid in self.window_pids:
            kill_window_process(pid)
        if self.proxy is not None:
            self.proxy.close()
        if self.server is not None:
            self.server.stop(kill=True)
        if self.mounted is not None:
            unmount(self.mounted)
            self.mounted = None


# ------------------------------------------------------------------------------ the kinds


def round_main_kill(r: Round) -> None:
    server = r.start_server()
    r.add_writers(2)
    r.start_writers()
    r.client = MainProcessRunner(r.client_dir, *r.client_args(server.url))
    r.client.start(wait=True)
    kills = r.rng.randint(8, 15) if r.full else r.rng.randint(4, 6)
    for _ in range(kills):
        # Anywhere: during start-up, mid-read, mid-flush, between acks.
        r.pause(0.0, 1.2)
        r.client.kill()
        r.result.faults["main process SIGKILL"] += 1
        r.client.start(wait=r.rng.random() < 0.5)
    r.wait_connected()
    r.pause(0.3, 1.0)
    r.drain_and_compare()


def round_server_kill(r: Round) -> None:
    server = r.start_server()
    r.add_writers(2)
    r.start_writers()
    r.client = MainProcessRunner(r.client_dir, *r.client_args(server.url))
    r.client.start()
    r.wait_connected(20, "first connection")
    kills = r.rng.randint(3, 6) if r.full else r.rng.randint(2, 3)
    for _ in range(kills):
        r.pause(0.3, 1.5)
        server.stop(kill=True)
        r.result.faults["server SIGKILL"] += 1
        r.pause(0.0, 1.5)
        server.start()
        if r.rng.random() < 0.6:
            r.wait_connected(what="reconnected after a server restart")
    r.wait_connected(what="reconnected after the last server restart")
    r.pause(0.3, 1.0)
    r.drain_and_compare()


def round_net_cut(r: Round) -> None:
    r.start_server()
    proxy = r.start_proxy()
    r.add_writers(2)
    r.start_writers()
    r.client = MainProcessRunner(r.client_dir, *r.client_args(proxy.url))
    r.client.start()
    r.wait_connected(20, "first connection")
    # The client's backoff resets only after 10 s connected, so every quick cut makes the
    # next reconnect wait longer (up to 30 s): a handful per round is plenty.
    cuts = r.rng.randint(3, 6) if r.full else r.rng.randint(2, 3)
    for _ in range(cuts):
        r.pause(0.3, 1.5)
        proxy.set_mode("cut")
        r.result.faults["network cut"] += 1
        noticed = r.wait_status(lambda s: s["state"] != "connected", 10, "the cut noticed")
        r.pause(0.2, 2.0)
        proxy.set_mode("pass")
        back = r.wait_connected(what="reconnected after a cut")
        r.result.notes.append(f"cut noticed in {noticed:.2f} s, reconnected {back:.1f} s after")
    r.pause(0.3, 1.0)
    r.drain_and_compare()


def round_blackhole(r: Round) -> None:
    r.start_server()
    proxy = r.start_proxy()
    r.add_writers(2)
    r.start_writers()
    r.client = MainProcessRunner(r.client_dir, *r.client_args(proxy.url))
    r.client.start()
    r.wait_connected(20, "first connection")
    holes = r.rng.randint(3, 5) if r.full else 2
    for _ in range(holes):
        r.pause(0.3, 1.5)
        proxy.set_mode("blackhole")
        r.result.faults["black hole"] += 1
        # Nothing closes: only the client's heartbeat (silence 3 s) or ack timeout (3 s)
        # can notice.
        noticed = r.wait_status(
            lambda s: s["state"] != "connected", 15, "the black hole noticed by the heartbeat"
        )
        r.pause(0.0, 1.5)
        proxy.set_mode("pass")
        back = r.wait_connected(what="reconnected after a black hole")
        r.result.notes.append(f"black hole noticed in {noticed:.1f} s, back {back:.1f} s after")
    r.pause(0.3, 1.0)
    r.drain_and_compare()


def round_auth(r: Round) -> None:
    # 2 s as the issue asks; full mode also tries 3 s, where a refreshed token lives past
    # the client's 2 s reconnect delay and expires again while chunks are in flight.
    ttl = r.rng.choice((2, 3)) if r.full else 2
    r.result.notes.append(f"access tokens live {ttl} s")
    made = r.start_server("--access-ttl", str(ttl))
    user = made.run_cli("add-user", USER, "--password-stdin", input_text=PASSWORD + "\n")
    if user.returncode != 0:
        raise RoundProblem(f"add-user failed: {user.stderr.decode(errors='replace')}")
    r.add_writers(2)
    r.start_writers()
    r.client = MainProcessRunner(r.client_dir, *r.client_args(made.url))
    r.client.start()
    r.wait_connected(20, "first connection (guest)")
    storms = r.rng.randint(3, 5) if r.full else 2
    for _ in range(storms):
        login = log_monitor(
            "login",
            "--identifier",
            USER,
            "--password-stdin",
            "--data-dir",
            str(r.client_dir),
            input_text=PASSWORD + "\n",
        )
        if login.returncode != 0:
            raise RoundProblem(f"login failed: {login.stderr.strip()}")
        r.wait_status(
            lambda s: s["state"] == "connected" and s["identity"] == "user",
            RECONNECT_TIMEOUT,
            "connected as the user",
        )
        # Let the 2 s access token expire a few times while chunks flow.
        r.pause(4.5, 7.0 if r.full else 5.0)
        revoked = made.run_cli("revoke", USER)
        if revoked.returncode != 0:
            raise RoundProblem(f"revoke failed: {revoked.stderr.decode(errors='replace')}")
        r.result.faults["refresh-token revocation"] += 1
        fallback = r.wait_status(
            lambda s: s["state"] == "connected" and s["identity"] == "guest",
            RECONNECT_TIMEOUT,
            "fell back to guest after the revocation",
        )
        r.result.notes.append(f"guest again {fallback:.1f} s after the revocation")
        r.pause(0.5, 1.5)
    r.pause(0.3, 1.0)
    r.drain_and_compare()
    # An expiry shows as a retry_auth while connected, or as a refused handshake when
    # the token expired before the client reconnected with it.
    server_log = made.log_text()
    expiries = server_log.count("expired while connected") + server_log.count(
        "told to retry auth (token_expired)"
    )
    r.result.faults["access-token expiry"] += expiries
    if expiries < storms:
        r.result.problems.append(f"only {expiries} access-token expiries in {storms} storms")


def round_disk_full(r: Round) -> None:
    r.start_server()
    proxy = r.start_proxy()
    # The server is unreachable from the start: every connection is refused.
    proxy.set_mode("cut")
    r.mounted = mount_small_filesystem(r.client_dir, DISK_MIB) if r.mount else None
    extra: tuple[str, ...] = ()
    if r.mounted is None:
        # No mount allowed here: exercise the spool's own bound instead of the disk's.
        extra = ("--spool-max-mb", "2")
        r.result.notes.append("fallback: no mount (not permitted or --no-mount), --spool-max-mb 2")
        target = 6 * 1024 * 1024
    else:
        r.result.notes.append(f"data dir on a {DISK_MIB} MiB {r.mounted.how}")
        target = (DISK_MIB + 8) * 1024 * 1024
    flood = r.add_writers(1, burst=400, pause=0.002, payload=(100, 400), limit_bytes=target)[0]
    r.add_writers(1)
    r.start_writers()
    r.client = MainProcessRunner(r.client_dir, *r.client_args(proxy.url, *extra))
    r.client.start()
    if r.mounted is not None:
        mount = r.mounted.path
        # The spool stops growing at a margin of free disk (so that it can always
        # drain); whatever else then fills the disk to the last byte is the ballast.
        filled = wait_until(
            lambda: free_bytes(mount) < 256 * 1024 or bool(r.status().get("spoolFull")),
            120,
            "the spool full on its small disk",
            interval=0.05,
            error=RoundProblem,
        )
        ballast = mount / "ballast"
        with ballast.open("wb") as sink, contextlib.suppress(OSError):
            while True:
                sink.write(bytes(1024 * 1024))
                sink.flush()
        r.result.faults["disk full"] += 1
        r.result.notes.append(
            f"spool full after {filled:.1f} s, then the disk filled by ballast "
            f"({free_bytes(mount) // 1024} KiB free); status {r.status().get('paused')=}"
        )
    else:
        r.wait_status(lambda s: bool(s["spoolFull"]), 120, "the spool full")
        r.result.faults["spool full (bound)"] += 1
        full = r.status()
        r.result.notes.append(
            f"spool full: status paused={full['paused']}, lastError={full['lastError']!r}"
        )
    wait_until(lambda: flood.done, 120, "the flood writer done", interval=0.05, error=RoundProblem)
    r.pause(0.5, 2.0)
    r.status()  # still alive while full
    proxy.set_mode("pass")
    r.wait_connected(what="connected once the server is reachable")
    if r.mounted is not None:
        # Draining must work on a disk full to the last byte (the spool gives back its
        # WAL and its reserve); only then is the disk freed again.
        sent = int(r.status()["sentChunks"])
        r.wait_status(lambda s: int(s["sentChunks"]) >= sent + 3, 60, "acks on a full disk")
        (r.mounted.path / "ballast").unlink(missing_ok=True)
    r.drain_and_compare()


def start_windowed_client(r: Round) -> WindowedMainProcess:
    server = r.start_server()
    r.add_writers(2)
    r.start_writers()
    client = WindowedMainProcess(r.client_dir, *r.client_args(server.url))
    r.client = client
    client.start()
    r.wait_connected(20, "first connection")
    return client


def round_host_kill(r: Round) -> None:
    client = start_windowed_client(r)
    kills = r.rng.randint(2, 3) if r.full else 1
    for _ in range(kills):
        answers = wait_for_ready_windows(r, client.windows)
        kill_host(r, answers[0].host, len(answers))
    r.pause(0.3, 1.0)
    r.drain_and_compare()


def kill_host(r: Round, host: int, count: int) -> None:
    """SIGKILL the renderer host while its windows update; they must come back."""
    r.pause(0.2, 1.5)  # while they are updating: the writers keep the status moving
    before = r.status()["sentBytes"]
    below = descendants(host)
    r.window_pids.update(below)
    os.kill(host, signal.SIGKILL)
    r.result.faults["renderer host SIGKILL"] += 1
    r.wait_status(
        lambda s: s["sentBytes"] > before and s["state"] == "connected",
        10,
        "shipping going on after the host died",
    )
    took = wait_until(
        lambda: sum(1 for a in ready_windows(r) if a.host != host) >= count,
        WINDOW_START_TIMEOUT,
        f"{count} windows back in a new host",
        interval=0.05,
        error=RoundProblem,
    )
    r.result.notes.append(f"host SIGKILL: {count} windows back in {took:.1f} s")
    if r.status()["windows"] != count:
        raise RoundProblem(f"the status counts {r.status()['windows']} windows, not {count}")
    with contextlib.suppress(RoundProblem):
        wait_until(
            lambda: not any(alive(p) for p in below),
            10,
            "the host's helpers gone",
            interval=0.05,
            error=RoundProblem,
        )
    left = [p for p in below if alive(p)]
    if left:
        r.result.notes.append(f"{len(left)} helper processes outlived the killed host")


def round_page_kill(r: Round) -> None:
    client = start_windowed_client(r)
    kills = r.rng.randint(2, 3) if r.full else 1
    for _ in range(kills):
        kill_page(r, wait_for_ready_windows(r, client.windows))
    r.pause(0.3, 1.0)
    r.drain_and_compare()


def kill_page(r: Round, answers: list[WindowAnswer]) -> None:
    """SIGKILL one page's render process; only that page reloads, in the same host."""
    r.pause(0.2, 1.5)
    victim = r.rng.choice(answers)
    reloads = {a.ref: int(a.fields.get("reloads") or 0) for a in answers}
    process = victim.fields.get("renderProcess")
    if not isinstance(process, int) or process not in descendants(victim.host):
        raise RoundProblem(f"window {victim.window} names no render process of its host")
    before = r.status()["sentBytes"]
    os.kill(process, signal.SIGKILL)
    r.result.faults["page render process SIGKILL"] += 1

    def reloaded() -> bool:
        now = {a.ref: a for a in ready_windows(r)}
        page = now.get(victim.ref)
        return (
            page is not None
            and int(page.fields.get("reloads") or 0) == reloads[victim.ref] + 1
            and bool(page.fields.get("hasStatus"))
            and page.fields.get("renderProcess") not in (None, process)
        )

    wait_until(
        reloaded,
        15,
        "the killed page reloaded and showing the status",
        interval=0.05,
        error=RoundProblem,
    )
    others = {a.ref: a for a in ready_windows(r) if a.ref != victim.ref}
    for ref, count in reloads.items():
        if ref != victim.ref and (
            ref not in others or int(others[ref].fields.get("reloads") or 0) != count
        ):
            raise RoundProblem(f"window {ref.window} was disturbed by another page's death")
    r.wait_status(
        lambda s: s["sentBytes"] > before and s["state"] == "connected",
        10,
        "shipping going on after the page died",
    )


def ready_windows(r: Round) -> list[WindowAnswer]:
    """The windows that answer and show the status (none when the main process does not
    answer)."""
    try:
        answers = ask_windows(r.client_dir, "report", timeout=3)
    except (InspectionError, TimeoutError):
        return []
    ready = [a for a in answers if a.answered and a.ready and a.fields.get("hasStatus")]
    r.window_pids.update(a.host for a in ready)
    return ready


def wait_for_ready_windows(r: Round, count: int) -> list[WindowAnswer]:
    """``count`` ready windows showing the status; RoundProblem at the deadline."""
    found: list[WindowAnswer] = []

    def ready() -> bool:
        found[:] = ready_windows(r)
        return len(found) >= count

    wait_until(
        ready, WINDOW_START_TIMEOUT, f"{count} ready windows", interval=0.05, error=RoundProblem
    )
    return found


ROUNDS: dict[str, Callable[[Round], None]] = {
    "main-kill": round_main_kill,
    "server-kill": round_server_kill,
    "net-cut": round_net_cut,
    "blackhole": round_blackhole,
    "auth": round_auth,
    "disk-full": round_disk_full,
    "host-kill": round_host_kill,
    "page-kill": round_page_kill,
}


def run_round(
    index: int,
    kind: str,
    root: Path,
    seed: int,
    full: bool,
    mount: bool = True,
    keep: bool = False,
) -> RoundResult:
    """Run one round; its directory (logs, data) is removed when it passed, unless ``keep``."""
    r = Round(index, kind, root, random.Random(f"{seed}:{index}:{kind}"), full, mount)
    started = time.monotonic()
    try:
        ROUNDS[kind](r)
    except RoundProblem as exc:
        r.result.problems.append(str(exc))
    except Exception as exc:
        # MainProcessRunner.status raises RuntimeError when the main process died; a
        # start that timed out raises TimeoutError. Either way the round failed, and the
        # campaign goes on to the next one.
        r.result.problems.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
    finally:
        r.cleanup()
    if r.result.problems and not r.result.written:
        # The round stopped early: count what did reach the server anyway.
        with contextlib.suppress(Exception):
            server = r.server or ServerProcess(r.server_dir)
            r.server = server
            r.compare()
    r.result.seconds = time.monotonic() - started
    if r.result.ok and not keep:
        shutil.rmtree(r.dir, ignore_errors=True)
    return r.result


# ------------------------------------------------------------------------------ campaign


@dataclass
class Campaign:
    seed: int
    mode: str
    rounds: list[RoundResult] = field(default_factory=list)
    seconds: float = 0.0
    kept: Path | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(result.ok for result in self.rounds)

    def totals(self) -> RoundResult:
        total = RoundResult(0, "all")
        for result in self.rounds:
            total.faults.update(result.faults)
            total.written += result.written
            total.stored += result.stored
            total.lost += result.lost
            total.duplicated += result.duplicated
            total.out_of_order += result.out_of_order
            total.garbage += result.garbage
            total.problems += result.problems
        return total

    def table(self) -> str:
        rows = [
            "| fault kind | rounds | faults injected | lines written | lines stored "
            "| lost | duplicated | out of order |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for kind in KINDS:
            of_kind = [result for result in self.rounds if result.kind == kind]
            if not of_kind:
                continue
            rows.append(_row(kind, of_kind))
        rows.append(_row("**all**", self.rounds))
        return "\n".join(rows)


def _row(name: str, results: list[RoundResult]) -> str:
    faults: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
    described = ", ".join(f"{count} {what}" for what, count in sorted(faults.items())) or "0"
    return (
        f"| {name} | {len(results)} | {described} "
        f"| {sum(r.written for r in results):,} | {sum(r.stored for r in results):,} "
        f"| {sum(r.lost for r in results)} | {sum(r.duplicated for r in results)} "
        f"| {sum(r.out_of_order for r in results)} |"
    )


def run_campaign(
    mode: str = "quick",
    seed: int | None = None,
    seconds: float = FULL_SECONDS,
    kinds: tuple[str, ...] = KINDS,
    keep: bool = False,
    report: Callable[[str], None] = print,
    mount: bool = True,
) -> Campaign:
    """Run the campaign; ``report`` gets one line per round as it ends."""
    seed = random.randrange(1 << 32) if seed is None else seed
    campaign = Campaign(seed, mode)
    chooser = random.Random(seed)
    # Full mode draws kinds from a shuffled bag holding each kind once, refilled when
    # empty: random order, and every kind within any len(kinds) rounds.
    bag: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="chaos-")).resolve()
    report(f"chaos campaign: {mode} mode, seed {seed}, work dir {root}")
    started = time.monotonic()
    index = 0
    try:
        while True:
            if mode == "quick":
                if index >= len(kinds):
                    break
                kind = kinds[index]
            else:
                if time.monotonic() - started >= seconds:
                    break
                if not bag:
                    bag = list(kinds)
                    chooser.shuffle(bag)
                kind = bag.pop()
            index += 1
            result = run_round(index, kind, root, seed, full=mode == "full", mount=mount, keep=keep)
            campaign.rounds.append(result)
            faults = ", ".join(f"{n} {what}" for what, n in sorted(result.faults.items()))
            report(
                f"round {index:3d} {kind:<14} {result.seconds:5.1f} s  {faults or 'no fault'}; "
                f"written {result.written}, stored {result.stored}, lost {result.lost}, "
                f"duplicated {result.duplicated}, out of order {result.out_of_order}"
                + ("" if result.ok else "  FAILED")
            )
            for note in result.notes:
                report(f"          note: {note}")
            for problem in result.problems:
                report(f"          PROBLEM: {problem}")
    except KeyboardInterrupt:
        # The round's own cleanup already ran (processes, mounts); report what was done.
        campaign.interrupted = True
        report(f"interrupted during round {index}")
    finally:
        campaign.seconds = time.monotonic() - started
        if keep or not campaign.ok:
            campaign.kept = root
        else:
            shutil.rmtree(root, ignore_errors=True)
    return campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.chaos_campaign",
        description="Inject faults into a real client and server; count lost, duplicated "
        "and reordered lines.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="every fault kind once (default)")
    which.add_argument("--full", action="store_true", help="random fault kinds for 10 minutes")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random choice")
    parser.add_argument(
        "--seconds", type=float, default=FULL_SECONDS, help="length of --full (default 600)"
    )
    parser.add_argument(
        "--kind", action="append", choices=KINDS, default=None, help="only these kinds"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    parser.add_argument(
        "--no-mount",
        action="store_true",
        help="disk-full rounds use a tiny --spool-max-mb instead of mounting a small filesystem",
    )
    args = parser.parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM unwinds like ^C, so every round's cleanup (processes, mounts) still runs.
    signal.signal(signal.SIGTERM, interrupted)
    campaign = run_campaign(
        "full" if args.full else "quick",
        args.seed,
        args.seconds,
        tuple(args.kind) if args.kind else KINDS,
        args.keep,
        report=lambda line: print(line, flush=True),
        mount=not args.no_mount,
    )
    print()
    print(
        f"Chaos campaign, {campaign.mode} mode, seed {campaign.seed}, "
        f"{len(campaign.rounds)} rounds in {campaign.seconds:.0f} s"
        + (" (interrupted):" if campaign.interrupted else ":")
    )
    print()
    print(campaign.table())
    if campaign.kept is not None:
        print(f"\nwork dir kept: {campaign.kept}")
    return 0 if campaign.ok else 1


if __name__ == "__main__":
    sys.exit(main())
