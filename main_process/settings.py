"""The main process's settings: a TOML file, overridden by ``LOG_MONITOR_*``, overridden by flags.

Owns the list of settings, their defaults, and the merge of the three layers. A setting
that cannot be used (an unknown key, a wrong type, a negative window) is one
:class:`SettingsError` sentence naming where it came from; the CLI prints it and exits 2.

The file is ``--config PATH``, else ``$LOG_MONITOR_CONFIG``, else ``config.toml`` in the
platform's user config dir; a missing default file is simply no settings. Keys use the
names of the flags with ``_`` (``server``, ``socketio_path``, ``sources = [...]``); the
environment uses the same names upper-cased after ``LOG_MONITOR_`` (lists are separated
by the platform's path separator, like ``PATH``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import msgspec
import platformdirs

CONFIG_ENV = "LOG_MONITOR_CONFIG"
ENV_PREFIX = "LOG_MONITOR_"
MIB = 1024 * 1024


class SettingsError(Exception):
    """Settings that cannot be used; the message is one sentence for a person."""


class SettingsLayer(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What one layer (file, environment, flags) may set; None means "not set here"."""

    server: str | None = None
    socketio_path: str | None = None
    namespace: str | None = None
    sources: list[str] | None = None
    backlog: list[str] | None = None
    headless: bool | None = None
    windows: int | None = None
    exit_with_windows: bool | None = None
    window: int | None = None
    ack_timeout: float | None = None
    ping_interval: float | None = None
    silence_timeout: float | None = None
    spool_max_mb: float | None = None
    chunk_kib: int | None = None
    chunk_linger_ms: float | None = None
    poll: bool | None = None
    from_end: bool | None = None
    log_level: str | None = None


@dataclass(frozen=True)
class Settings:
    """Every setting of ``log-monitor run`` with its default; see README's table."""

    data_dir: Path
    server: str | None = None  # None: start the embedded reference server
    socketio_path: str = "/socket.io/"
    namespace: str = "/client"
    sources: tuple[str, ...] = ()
    backlog: tuple[str, ...] = ()
    headless: bool = False
    windows: int | None = None  # None: one window when a display exists
    exit_with_windows: bool = False
    window: int = 8
    ack_timeout: float = 30.0
    ping_interval: float = 20.0
    silence_timeout: float = 30.0
    spool_max_mb: float = 256.0
    chunk_kib: int = 512
    chunk_linger_ms: float = 50.0
    poll: bool = False
    from_end: bool = False
    log_level: str = "info"

    @property
    def spool_max_bytes(self) -> int:
        return int(self.spool_max_mb * MIB)

    @property
    def chunk_max_bytes(self) -> int:
        return self.chunk_kib * 1024


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("log-monitor", appauthor=False)) / "config.toml"


def read_file_layer(path: Path | None, environ: Mapping[str, str]) -> SettingsLayer:
    explicit = path is not None or bool(environ.get(CONFIG_ENV))
    chosen = path or (
        Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else default_config_path()
    )
    try:
        raw = chosen.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise SettingsError(f"the config file {chosen} does not exist.") from None
        return SettingsLayer()
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {chosen}: {exc.strerror}.") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        return msgspec.convert(data, type=SettingsLayer)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(f"the config file {chosen} is not usable: {exc}.") from None


def read_environment_layer(environ: Mapping[str, str]) -> SettingsLayer:
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(SettingsLayer):
        name = ENV_PREFIX + field.name.upper()
        if name not in environ or environ[name] == "":
            continue
        text = environ[name]
        if field.name in ("sources", "backlog"):
            values[field.name] = [part for part in text.split(os.pathsep) if part]
        elif field.name in ("headless", "exit_with_windows", "poll", "from_end"):
            lowered = text.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise SettingsError(f"{name}={text!r} is not a yes/no value.")
            values[field.name] = lowered in ("1", "true", "yes")
        else:
            values[field.name] = text
    try:
        # strict=False lets "8" become 8 for numeric settings.
        return msgspec.convert(values, type=SettingsLayer, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"an environment variable is not usable: {exc}.") from None


def merge(data_dir: Path, *layers: SettingsLayer) -> Settings:
    """Later layers win; then every value is checked once, whatever layer it came from."""
    settings = Settings(data_dir=data_dir)
    known = {f.name for f in fields(Settings)}
    for layer in layers:
        changes: dict[str, Any] = {}
        for name in msgspec.structs.fields(SettingsLayer):
            value = getattr(layer, name.name)
            if value is not None and name.name in known:
                changes[name.name] = tuple(value) if isinstance(value, list) else value
        settings = replace(settings, **changes)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    positive = {
        "window": settings.window,
        "ack_timeout": settings.ack_timeout,
        "ping_interval": settings.ping_interval,
        "silence_timeout": settings.silence_timeout,
        "spool_max_mb": settings.spool_max_mb,
        "chunk_kib": settings.chunk_kib,
    }
    if settings.chunk_linger_ms < 0:
        raise SettingsError(f"chunk_linger_ms must be 0 or more (got {settings.chunk_linger_ms}).")
    for name, value in positive.items():
        if value <= 0:
            raise SettingsError(f"{name} must be greater than 0 (got {value}).")
    if settings.windows is not None and settings.windows < 0:
        raise SettingsError(f"windows must be 0 or more (got {settings.windows}).")
    if settings.server is not None and not settings.server.startswith(
        ("http://", "https://", "ws://", "wss://")
    ):
        raise SettingsError(
            f"the server URL {settings.server!r} must start with http(s):// or ws(s)://."
        )
    if not settings.namespace.startswith("/"):
        raise SettingsError(f"the namespace {settings.namespace!r} must start with '/'.")
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise SettingsError(
            f"log_level must be debug, info, warning or error (got {settings.log_level!r})."
        )
