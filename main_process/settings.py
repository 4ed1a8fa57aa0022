"""The main process's settings: a TOML file, overridden by ``LOG_MONITOR_*``, overridden by flags.

Owns the list of settings, their defaults, the range every numeric setting accepts
(``NUMERIC_RANGES``), and the merge of the three layers. A setting that cannot be used (an
unknown key, a wrong type, a number that is not finite or out of its range) is one
:class:`SettingsError` sentence naming where it came from; the CLI prints it and exits 2.
Each layer is checked as it is read (so the sentence names the file, the variable or the
flag), and the merged settings once more.

Why ranges and not just "positive": every number here ends up in a timer, a SQLite
integer or a buffer size, where ``inf``, ``nan`` or a 20-digit integer fail far from the
setting (a traceback at start, or a log line repeated forever). The ranges are wide
enough for any real use and tests' short timers, and README lists them.

The file is ``--config PATH``, else ``$LOG_MONITOR_CONFIG``, else ``config.toml`` in the
platform's user config dir; a missing default file is simply no settings. Keys use the
names of the flags with ``_`` (``server``, ``socketio_path``, ``sources = [...]``); the
environment uses the same names upper-cased after ``LOG_MONITOR_`` (lists are separated
by the platform's path separator, like ``PATH``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, get_args

import msgspec
import platformdirs

from main_process.sources.file_follower import SymlinkPolicy
from main_process.sources.text_codecs import normalize as normalize_encoding
from protocol import DEFAULT_NAMESPACE, DEFAULT_SOCKETIO_PATH, ProtocolError, parse_server_url

CONFIG_ENV = "LOG_MONITOR_CONFIG"
ENV_PREFIX = "LOG_MONITOR_"
MIB = 1024 * 1024


class SettingsError(Exception):
    """Settings that cannot be used; the message is one sentence for a person."""


@dataclass(frozen=True, slots=True)
class NumberRange:
    """The values a numeric setting accepts: finite, from ``low`` to ``high`` inclusive."""

    low: float
    high: float
    whole: bool = False
    """An integer setting (the layers' types already refuse a fraction)."""
    unit: str = ""

    def accepts(self, value: float) -> bool:
        # An int is compared as it is (math.isfinite would overflow on a 400-digit one).
        if not isinstance(value, int) and not math.isfinite(value):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        unit = f" {self.unit}" if self.unit else ""
        return f"{kind} from {_number_text(self.low)} to {_number_text(self.high)}{unit}"


NUMERIC_RANGES: Final[dict[str, NumberRange]] = {
    "windows": NumberRange(0, 16, whole=True),
    "window": NumberRange(1, 256, whole=True),
    "ack_timeout": NumberRange(0.1, 3600, unit="seconds"),
    "ping_interval": NumberRange(0.1, 3600, unit="seconds"),
    "silence_timeout": NumberRange(0.1, 3600, unit="seconds"),
    "spool_max_mb": NumberRange(1, 1024 * 1024, unit="MiB"),
    # The chunk must fit the server's message limit (Engine.IO's is usually 1 MB; the
    # reference server's Socket.IO limit is 8 MiB).
    "chunk_kib": NumberRange(1, 8 * 1024, whole=True, unit="KiB"),
    "chunk_linger_ms": NumberRange(0, 60_000, unit="ms"),
    # Down to a second for tests; up to a day (a longer silence is not worth a notice).
    "notify_unreachable_after": NumberRange(1, 86_400, unit="seconds"),
    # Down to a minute and a half for tests; ten years is "never" in practice.
    "forget_after_days": NumberRange(0.001, 3650, unit="days"),
}
"""Every numeric setting's accepted values (README's settings table lists them)."""

SYMLINK_POLICIES: Final[tuple[str, ...]] = get_args(SymlinkPolicy)
TokenStorePreference: TypeAlias = Literal["auto", "keychain", "file"]
"""Where the tokens live (``keychain.open_token_store``): the keychain when usable, else
the file; the keychain or nothing; the file."""
TOKEN_STORES: Final[tuple[str, ...]] = get_args(TokenStorePreference)
GamePresetName: TypeAlias = Literal["star-citizen"]
"""A game whose logs ``--game`` knows how to find (``star_citizen``)."""
GAMES: Final[tuple[str, ...]] = get_args(GamePresetName)


def _number_text(value: float) -> str:
    """``value`` for a sentence: ``inf``, ``nan``, ``0.1``, ``3600``; a huge integer is
    not spelled out (Python refuses to print one of over 4,300 digits)."""
    if isinstance(value, int):
        return str(value) if abs(value) < 10**21 else "a number over 10^21"
    if math.isfinite(value) and value.is_integer() and abs(value) < 10**21:
        return str(int(value))
    return repr(value)


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
    follow_symlinks: SymlinkPolicy | None = None
    token_store: TokenStorePreference | None = None
    notifications: bool | None = None
    notify_unreachable_after: float | None = None
    forget_after_days: float | None = None
    game: GamePresetName | None = None
    game_dir: str | None = None
    encoding: str | None = None
    encodings: dict[str, str] | None = None


@dataclass(frozen=True)
class Settings:
    """Every setting of ``log-monitor run`` with its default; see README's table."""

    data_dir: Path
    server: str | None = None  # None: start the embedded reference server
    socketio_path: str = DEFAULT_SOCKETIO_PATH
    namespace: str = DEFAULT_NAMESPACE
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
    follow_symlinks: SymlinkPolicy = "named"
    """Which followed files may be symbolic links (``sources.SourceSet``): ``named``
    (only a path named without a wildcard that was a link when first seen), ``never``,
    ``always``."""
    token_store: TokenStorePreference = "auto"
    """Where the tokens live: ``auto`` (the keychain when usable, else the file),
    ``keychain``, ``file`` (``keychain.open_token_store``)."""
    notifications: bool = True
    """Desktop notifications for what needs a person (``notifications.NotificationPolicy``)."""
    encoding: str = "utf-8"
    """The encoding of the followed files (``text_codecs``): utf-8, latin-1, cp1252,
    utf-16 (by its byte-order mark), utf-16-le, utf-16-be."""
    encodings: dict[str, str] = dataclasses.field(default_factory=dict)
    """Per source or backlog pattern (as written in ``sources``/``backlog``): its files'
    encoding, over ``encoding``."""
    game: GamePresetName | None = None
    """Also follow this game's logs (``star_citizen``), found under ``game_dir`` or in the
    usual places."""
    game_dir: str | None = None
    forget_after_days: float = 30.0
    """A file's checkpoint (and a backlog file's mark) is forgotten once the file has been
    gone this long (``Spool.forget_missing``): the state stays bounded."""
    notify_unreachable_after: float = 300.0
    """Seconds without a connection before the "cannot reach the server" notification."""

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
        layer = msgspec.convert(data, type=SettingsLayer)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(f"the config file {chosen} is not usable: {exc}.") from None
    except ValueError:
        # tomllib's int() of an integer literal of over 4,300 digits.
        raise SettingsError(
            f"the config file {chosen} is not usable: a number in it is too long."
        ) from None
    return check_layer(layer, lambda name: f"{name} in the config file {chosen}")


def read_environment_layer(environ: Mapping[str, str]) -> SettingsLayer:
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(SettingsLayer):
        name = ENV_PREFIX + field.name.upper()
        if name not in environ or environ[name] == "":
            continue
        text = environ[name]
        if field.name in ("sources", "backlog"):
            values[field.name] = [part for part in text.split(os.pathsep) if part]
        elif field.name in ("headless", "exit_with_windows", "poll", "from_end", "notifications"):
            lowered = text.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise SettingsError(f"{name}={_clipped(text)} is not a yes/no value.")
            values[field.name] = lowered in ("1", "true", "yes")
        else:
            values[field.name] = text
    for name, value in values.items():
        try:
            # strict=False lets "8" become 8 for numeric settings.
            msgspec.convert({name: value}, type=SettingsLayer, strict=False)
        except msgspec.ValidationError as exc:
            variable = ENV_PREFIX + name.upper()
            reason = str(exc).split(" - at `$", 1)[0]
            raise SettingsError(
                f"the environment variable {variable}={_clipped(environ[variable])} "
                f"is not usable: {reason}."
            ) from None
    layer = msgspec.convert(values, type=SettingsLayer, strict=False)
    return check_layer(layer, lambda name: ENV_PREFIX + name.upper())


def _clipped(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def checked_flag_layer(layer: SettingsLayer) -> SettingsLayer:
    """``layer`` (built from command-line flags) once its numbers are checked; a bad one
    is a ``SettingsError`` naming the flag."""
    return check_layer(layer, lambda name: "--" + name.replace("_", "-"))


def check_layer(layer: SettingsLayer, subject: Callable[[str], str]) -> SettingsLayer:
    """``layer`` once every number it sets is in its range (``NUMERIC_RANGES``); else a
    ``SettingsError`` naming the setting as ``subject(name)`` says (its flag, its
    variable, or its key in a file)."""
    for name, allowed in NUMERIC_RANGES.items():
        value = getattr(layer, name)
        if value is not None and not allowed.accepts(value):
            raise SettingsError(
                f"{subject(name)} must be {allowed.describe()} (got {_number_text(value)})."
            )
    if layer.follow_symlinks is not None and layer.follow_symlinks not in SYMLINK_POLICIES:
        raise SettingsError(
            f"{subject('follow_symlinks')} must be {', '.join(SYMLINK_POLICIES[:-1])} or "
            f"{SYMLINK_POLICIES[-1]} (got {layer.follow_symlinks!r})."
        )
    named = [] if layer.encoding is None else [(subject("encoding"), layer.encoding)]
    named += [(f"{subject('encodings')}[{p!r}]", e) for p, e in (layer.encodings or {}).items()]
    for where, value in named:
        try:
            normalize_encoding(value)
        except ValueError as exc:
            raise SettingsError(f"{where}: {exc}.") from None
    if layer.game is not None and layer.game not in GAMES:
        raise SettingsError(f"{subject('game')} must be {' or '.join(GAMES)} (got {layer.game!r}).")
    if layer.token_store is not None and layer.token_store not in TOKEN_STORES:
        raise SettingsError(
            f"{subject('token_store')} must be {', '.join(TOKEN_STORES[:-1])} or "
            f"{TOKEN_STORES[-1]} (got {layer.token_store!r})."
        )
    return layer


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
    check_layer(
        SettingsLayer(
            **{name: getattr(settings, name) for name in NUMERIC_RANGES},
            follow_symlinks=settings.follow_symlinks,
            token_store=settings.token_store,
            game=settings.game,
            encoding=settings.encoding,
            encodings=dict(settings.encodings),
        ),
        lambda name: name,
    )
    if settings.server is not None:
        try:
            parse_server_url(settings.server)
        except ProtocolError:
            raise SettingsError(
                f"the server URL {settings.server!r} must start with http(s):// or ws(s)://."
            ) from None
    if not settings.namespace.startswith("/"):
        raise SettingsError(f"the namespace {settings.namespace!r} must start with '/'.")
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise SettingsError(
            f"log_level must be debug, info, warning or error (got {settings.log_level!r})."
        )
