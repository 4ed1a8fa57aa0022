"""Where one running instance's IPC sockets live, who may connect to them, and how much a
peer may send.

Owns: the private runtime directory of an instance (keyed by its data directory, so two
data directories never share sockets and every process of one instance agrees), the
endpoint addresses inside it, the ``endpoints.json`` file a bound main process leaves
there for its viewers, the CURVE keys used where ``ipc://`` does not exist, and the size
limits of every socket that receives from a peer (``limit_inbound``).

* Linux/macOS: ``ipc://<runtime dir>/pub.sock`` and ``cmd.sock``. The directory is mode
  0700 and owned by us, and so is the chain above it checked (``verify_private_chain``):
  every directory up to ``/`` belongs to root or to us and no one else can write it
  (unless it is sticky, like ``/tmp``, where others cannot rename what is ours). So no
  other user can move the directory aside and put theirs in its place, not even under a
  shared temp directory: a viewer would otherwise send a password to their socket. The
  socket files are made 0600 after bind, so other users can neither connect nor even see
  the sockets.
* Windows (pyzmq's wheels have no ``ipc://``): loopback TCP on ports the OS picks, with
  CURVE encryption; the server key pair and the one client key pair allowed in (a ZAP
  allow-list, see ``ipc/host.py``) are files in the runtime directory, which lives under
  the user's own profile. The same path runs on Linux when forced (``transport="tcp"``),
  which is how it is tested.

Unix socket paths are limited (``sun_path``: 108 bytes on Linux, 104 on macOS). When the
platform runtime directory would make the path too long, or is not safe, the instance uses
a short private directory under the temp directory instead; if that one is not usable
either, the error says why in one sentence.

Size limits (``ZMQ_MAXMSGSIZE``, per frame): libzmq reads a frame's length before its
bytes and disconnects a peer whose frame is over the socket's limit, without allocating
it. What the main process receives is small (commands, subscriptions); what viewers
receive is larger (recent log lines, snapshots), and the main process never sends a frame
over that limit (``publisher``, ``commands``).

Must not: bind or connect sockets (the publisher/commands modules do), or hold the
single-instance lock (``ipc/instance.py`` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import platformdirs
import zmq
import zmq.auth

from ipc.atomic_file import write_file_atomically

APP_NAME: Final = "log-monitor"
PUBLISHER_SOCKET: Final = "pub.sock"
COMMANDS_SOCKET: Final = "cmd.sock"
ENDPOINTS_FILE: Final = "endpoints.json"
CURVE_DIR: Final = "curve"
CURVE_CLIENTS_DIR: Final = "clients"
# macOS's sun_path is 104 bytes including the terminating NUL; Linux's is 108. Use the
# smaller everywhere so a path that works on one works on the other.
MAX_SOCKET_PATH: Final = 103

MIB: Final = 1024 * 1024
MAX_COMMAND_BYTES: Final = 1 * MIB
"""The largest frame the command server takes from a viewer (a command: a few KiB at most,
a window's report with its last line of 4,096 characters included)."""
MAX_SUBSCRIPTION_BYTES: Final = 4096
"""The largest frame the publisher takes from a subscriber: a subscription is one byte and
a topic prefix such as ``window.``, but the limit also applies to the handshake's
commands, and CURVE's (on TCP) are a few hundred bytes."""
MAX_PUBLISHED_BYTES: Final = 32 * MIB
"""The largest frame a viewer takes from the main process (a published message or a
reply); the main process never sends a larger one."""
COMMAND_RECEIVE_HWM: Final = 64
"""Requests queued per viewer before libzmq stops reading from it: with
``MAX_COMMAND_BYTES``, at most 64 MiB held for one viewer that floods."""

Transport: TypeAlias = Literal["ipc", "tcp"]


class EndpointError(RuntimeError):
    """The instance's endpoints cannot be made or found; the message is user-facing."""


class NotRunningError(EndpointError):
    """No main process has published endpoints for this data directory."""


def default_transport() -> Transport:
    """``ipc`` where libzmq has it (Linux, macOS), else loopback ``tcp`` with CURVE."""
    return "ipc" if zmq.has("ipc") else "tcp"


def instance_key(data_dir: str | os.PathLike[str]) -> str:
    """16 hex digits naming the instance of ``data_dir`` (its absolute path, hashed)."""
    absolute = os.path.abspath(os.fspath(data_dir))
    return hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _platform_runtime_base() -> Path | None:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to a directory
        # under /tmp; we verify ownership and mode ourselves, so the warning is noise.
        warnings.simplefilter("ignore")
        try:
            return Path(platformdirs.user_runtime_dir(APP_NAME, appauthor=False))
        except Exception:
            return None


def _fallback_runtime_base() -> Path:
    # Short on purpose: this is the answer to a too-long socket path.
    owner = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return Path(tempfile.gettempdir()) / f"lm-{owner}"


def runtime_dir_candidates(
    data_dir: str | os.PathLike[str], base: Path | None = None
) -> list[Path]:
    """The runtime directories an instance of ``data_dir`` may use, in order of preference."""
    key = instance_key(data_dir)
    if base is not None:
        return [base / key]
    platform_base = _platform_runtime_base()
    candidates = [] if platform_base is None else [platform_base / key]
    candidates.append(_fallback_runtime_base() / key)
    return candidates


def limit_inbound(socket: zmq.Socket[Any], max_bytes: int) -> None:
    """Make ``socket`` disconnect a peer that sends a frame over ``max_bytes`` (set before
    bind or connect: libzmq applies it to connections made afterwards)."""
    socket.setsockopt(zmq.MAXMSGSIZE, max_bytes)


def _socket_paths_fit(directory: Path) -> bool:
    longest = max(
        len(os.fsencode(directory / name)) for name in (PUBLISHER_SOCKET, COMMANDS_SOCKET)
    )
    return longest <= MAX_SOCKET_PATH


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) mode 0700, and check nobody else can use it.

    An existing directory must be a real directory (not a symlink) owned by us; group and
    other permission bits are removed. Someone else's directory is refused, since it
    could be a trap laid in a shared temp directory.
    """
    for directory in reversed([path, *path.parents]):
        if directory.exists():
            continue
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise EndpointError(f"{path} should be a private directory but is not a directory.")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise EndpointError(f"{path} belongs to another user; refusing to put sockets there.")
    if sys.platform != "win32" and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    verify_private_chain(path)
    return path


def verify_private_chain(path: Path) -> None:
    """Raise ``EndpointError`` (one sentence) unless no other user can replace ``path``:
    it is ours, and every directory above it (symbolic links resolved) belongs to root or
    to us and is writable by no one else, or is sticky (``/tmp``: others cannot rename or
    remove what is not theirs). No check where there are no uids (Windows: the runtime
    directory is in the user's own profile)."""
    if not hasattr(os, "getuid"):
        return
    uid = os.getuid()
    real = Path(os.path.realpath(path))
    for directory in (real, *real.parents):
        try:
            info = os.lstat(directory)
        except OSError as error:
            raise EndpointError(
                f"{directory} cannot be checked ({error.strerror or error}), so {path} "
                "may not be private; refusing to use it for sockets."
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            # realpath resolved every link: one here was put in place since.
            raise EndpointError(
                f"{directory} changed while {path} was being checked; refusing to use it "
                "for sockets."
            )
        owners = (uid,) if directory == real else (0, uid)
        if info.st_uid not in owners:
            raise EndpointError(
                f"{directory} belongs to another user (uid {info.st_uid}), who could replace "
                f"{path}; refusing to use it for sockets."
            )
        # Sticky excuses a parent (others cannot rename our entry in it), not the
        # directory itself (they could add files to it).
        sticky = directory != real and info.st_mode & stat.S_ISVTX
        if info.st_mode & 0o022 and not sticky:
            raise EndpointError(
                f"{directory} can be written by other users and is not sticky, so they "
                f"could replace {path}; refusing to use it for sockets."
            )


def prepare_runtime_dir(data_dir: str | os.PathLike[str], base: Path | None = None) -> Path:
    """The instance's private runtime directory, created if needed (main process side)."""
    problems: list[str] = []
    for candidate in runtime_dir_candidates(data_dir, base):
        if sys.platform != "win32" and not _socket_paths_fit(candidate):
            problems.append(f"{candidate} is too long for a Unix socket path")
            continue
        try:
            return make_private_dir(candidate)
        except (OSError, EndpointError) as error:
            problems.append(str(error).rstrip("."))
    raise EndpointError("No usable private runtime directory: " + "; ".join(problems) + ".")


# ----------------------------------------------------------------------------- CURVE


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """Z85 CURVE keys of one instance: the server's pair and the allowed client's pair."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    # The directory of public certificates the ZAP handler lets in.
    clients_dir: Path

    def configure_server(self, socket: zmq.Socket[Any]) -> None:
        socket.curve_server = True
        socket.curve_publickey = self.server_public
        socket.curve_secretkey = self.server_secret

    def configure_client(self, socket: zmq.Socket[Any]) -> None:
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.client_public
        socket.curve_secretkey = self.client_secret


def _private_file(path: Path) -> None:
    if sys.platform != "win32":
        os.chmod(path, 0o600)


def ensure_curve_keys(runtime_dir: Path) -> CurveKeys:
    """Load the instance's CURVE keys from ``runtime_dir``, creating them on first use."""
    curve_dir = make_private_dir(runtime_dir / CURVE_DIR)
    clients_dir = make_private_dir(curve_dir / CURVE_CLIENTS_DIR)
    server_file = curve_dir / "server.key_secret"
    client_file = clients_dir / "client.key_secret"
    for directory, name, secret_file in (
        (curve_dir, "server", server_file),
        (clients_dir, "client", client_file),
    ):
        if not secret_file.exists():
            public_path, secret_path = zmq.auth.create_certificates(directory, name)
            _private_file(Path(public_path))
            _private_file(Path(secret_path))
    return load_curve_keys(runtime_dir)


def load_curve_keys(runtime_dir: Path) -> CurveKeys:
    """The instance's CURVE keys (viewer side); ``EndpointError`` if they are missing."""
    curve_dir = runtime_dir / CURVE_DIR
    clients_dir = curve_dir / CURVE_CLIENTS_DIR
    try:
        server_public, server_secret = zmq.auth.load_certificate(curve_dir / "server.key_secret")
        client_public, client_secret = zmq.auth.load_certificate(clients_dir / "client.key_secret")
    except (OSError, ValueError) as error:
        raise EndpointError(f"The CURVE keys in {curve_dir} cannot be read: {error}") from error
    if server_secret is None or client_secret is None:
        raise EndpointError(f"The CURVE keys in {curve_dir} are incomplete.")
    return CurveKeys(server_public, server_secret, client_public, client_secret, clients_dir)


# ----------------------------------------------------------------------------- endpoints


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The two sockets of one instance: the status publisher and the command server."""

    runtime_dir: Path
    transport: Transport
    publisher: str
    commands: str
    curve: CurveKeys | None = None

    @classmethod
    def for_binding(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        transport: Transport | None = None,
        base: Path | None = None,
    ) -> Endpoints:
        """Addresses the main process binds (TCP ports are picked by the OS at bind)."""
        transport = transport or default_transport()
        runtime_dir = prepare_runtime_dir(data_dir, base)
        if transport == "ipc":
            return cls(
                runtime_dir,
                transport,
                f"ipc://{runtime_dir / PUBLISHER_SOCKET}",
                f"ipc://{runtime_dir / COMMANDS_SOCKET}",
            )
        return cls(
            runtime_dir,
            transport,
            "tcp://127.0.0.1:*",
            "tcp://127.0.0.1:*",
            ensure_curve_keys(runtime_dir),
        )

    def bound(self, publisher: str, commands: str) -> Endpoints:
        """These endpoints with the addresses the sockets actually bound (TCP ports)."""
        return Endpoints(self.runtime_dir, self.transport, publisher, commands, self.curve)

    def secure_socket_files(self) -> None:
        """Make bound ``ipc://`` socket files 0600 (the 0700 directory already guards them;
        this also keeps them private should the directory's mode ever be loosened)."""
        if self.transport != "ipc" or sys.platform == "win32":
            return
        for endpoint in (self.publisher, self.commands):
            path = Path(endpoint.removeprefix("ipc://"))
            if path.exists():
                os.chmod(path, 0o600)

    def save(self) -> Path:
        """Write ``endpoints.json`` (0600, atomically) for viewers to find the sockets."""
        target = self.runtime_dir / ENDPOINTS_FILE
        document = {
            "transport": self.transport,
            "publisher": self.publisher,
            "commands": self.commands,
            "pid": os.getpid(),
        }
        write_file_atomically(target, json.dumps(document).encode("utf-8"), mode=0o600)
        return target

    def remove_saved(self) -> None:
        """Remove ``endpoints.json`` (a clean shutdown; a stale one only costs a timeout)."""
        (self.runtime_dir / ENDPOINTS_FILE).unlink(missing_ok=True)

    @classmethod
    def discover(cls, data_dir: str | os.PathLike[str], *, base: Path | None = None) -> Endpoints:
        """The endpoints a running main process saved for ``data_dir`` (viewer side)."""
        unsafe: list[str] = []
        for runtime_dir in runtime_dir_candidates(data_dir, base):
            if not (runtime_dir / ENDPOINTS_FILE).exists():
                continue
            # Someone who could replace the directory could point us at their sockets
            # (and be sent a password): a main process would not have bound there either.
            try:
                verify_private_chain(runtime_dir)
            except EndpointError as error:
                unsafe.append(str(error))
                continue
            try:
                raw = (runtime_dir / ENDPOINTS_FILE).read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError as error:
                raise EndpointError(
                    f"Cannot read {runtime_dir / ENDPOINTS_FILE}: {error}"
                ) from error
            try:
                document = json.loads(raw)
                transport = document["transport"]
                publisher = str(document["publisher"])
                commands = str(document["commands"])
            except (ValueError, KeyError, TypeError) as error:
                raise EndpointError(
                    f"{runtime_dir / ENDPOINTS_FILE} is damaged: {error}"
                ) from error
            if transport == "ipc":
                return cls(runtime_dir, "ipc", publisher, commands)
            if transport == "tcp":
                return cls(runtime_dir, "tcp", publisher, commands, load_curve_keys(runtime_dir))
            raise EndpointError(
                f"{runtime_dir / ENDPOINTS_FILE} names unknown transport {transport!r}."
            )
        if unsafe:
            raise EndpointError(unsafe[0])
        raise NotRunningError(
            f"No log-monitor main process is running for data directory {data_dir}."
        )
