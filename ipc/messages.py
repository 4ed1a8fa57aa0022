"""Every message that crosses IPC between the main process and its viewers.

Owns: the message types (msgspec ``Struct``s, frozen, tagged with a ``"type"`` field and
grouped in three tagged unions: ``Published``, ``Command``, ``Reply``), the window report
that ``log-monitor windows`` assembles from them (``WindowsReport``, ``WindowAnswer``: typed
here, printed as JSON in one shape), the topic each published message travels on, which topics are *state* topics (their last value is cached
and re-sent to late joiners), and the typed encoders/decoders, built once here so every
process decodes with the same rules.

Must not: do any I/O, or carry a secret. No message type has a field for an access,
guest or refresh token; ``Login.password`` travels once towards the main process and is
hidden from ``repr()``/``str()`` so it cannot reach a log line or a status field by
accident. The publisher refuses anything that is not a ``Published`` type, so a command
(``Login`` included) can never be broadcast.

Why msgpack on the wire: the same typed decoders as JSON (unknown tags, missing fields and
wrong field types are rejected with msgspec's error text), but smaller and faster to
encode and decode (see ``bench/ipc_fanout.py``), and binary-safe. JSON is still available
through ``to_json`` for the renderer's JavaScript side, with the same camelCase names.
Field names are camelCase on the wire (``rename="camel"``: ``nextRetryMs``, ``clientId``)
so the wire and the UI agree with the original Electron client's vocabulary.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

import msgspec

ConnectionStateName: TypeAlias = Literal["disconnected", "connecting", "connected", "error"]
IdentityName: TypeAlias = Literal["user", "guest"]


class _Message(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    rename="camel",
    kw_only=True,
):
    """Base of every tagged IPC message (not itself on the wire)."""


# ----------------------------------------------------------------------------- published


class Status(_Message, frozen=True, tag="status"):
    """The connection state, as every viewer shows it. A state topic (cached, LVC)."""

    state: ConnectionStateName
    authenticated: bool = False
    identity: IdentityName | None = None
    username: str | None = None
    attempt: int = 0
    next_retry_ms: int | None = None
    server: str = ""
    client_id: str = ""
    buffered_chunks: int = 0
    buffered_bytes: int = 0
    sent_chunks: int = 0
    sent_bytes: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    windows: int = 0
    spool_full: bool = False
    # True while tailers are paused for any reason (spool full today; kept separate so a
    # future reason does not need a new field in every viewer).
    paused: bool = False
    game: str = ""
    """Which game installs and channels ``--game`` follows (empty without a game)."""
    credential_store: str = ""
    """Where the tokens live: ``file`` or ``keychain (<backend>)``; empty while starting."""


class Stats(_Message, frozen=True, tag="stats"):
    """Throughput and backlog progress. A state topic (cached, LVC)."""

    send_rate_chunks: float = 0.0
    send_rate_bytes: float = 0.0
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    decode_errors: int = 0
    checkpoints: int = 0
    """Files whose read position the spool remembers (bounded: ``forget_after_days``)."""
    backlog_marks: int = 0
    """Backlog files remembered as uploaded (bounded the same way)."""


class LogLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """One recent line of one followed file (an element of ``LogLines``)."""

    path: str
    text: str


class LogLines(_Message, frozen=True, tag="log_lines"):
    """Recent lines for live views. A stream topic: not cached, a gap is lost lines."""

    lines: tuple[LogLine, ...] = ()


class ServerEvent(_Message, frozen=True, tag="server_event"):
    """A ``processed_event`` payload from the server, forwarded as-is. A stream topic."""

    payload: dict[str, Any]


class WindowRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """Which window: its renderer host's pid and its number within that host (from 1)."""

    host: int
    window: int


class PageCounters(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """The shipping counters a page shows (None: not shown yet)."""

    buffered_chunks: int | None = None
    buffered_bytes: int | None = None
    sent_chunks: int | None = None
    sent_bytes: int | None = None
    send_rate: float | None = None
    dead_lettered: int | None = None


class WindowTimings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """When (ms after it was asked for) a window was created, loaded, first showed a status;
    and how long its last reload took to repaint (render process died → status painted)."""

    created_ms: float | None = None
    loaded_ms: float | None = None
    first_status_ms: float | None = None
    repainted_ms: float | None = None


class WindowGeometry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """Where a window is on its screen, in pixels."""

    x: int
    y: int
    width: int
    height: int


class ControlOutcome(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """How a window answered a ``WindowControl``: ``result`` if ``ok``, else ``error``."""

    id: str
    action: str
    ok: bool
    result: Any = None
    error: str | None = None


class ChartView(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """What a page's shipping chart draws (read back from its SVG): how many one-second
    samples, over how long, and the peak and latest of each line."""

    samples: int = 0
    span_ms: float | None = None
    rate_points: int = 0
    waiting_points: int = 0
    peak_rate: float | None = None
    last_rate: float | None = None
    peak_waiting: float | None = None
    last_waiting: float | None = None
    text: str = ""


class WindowView(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """What one window shows (read back from its page's DOM) and where it runs.

    The first group is ``window.lm.describe()`` of the page, field for field; the rest is
    what the renderer host knows about the window around the page. Never holds a secret:
    the password field is reported only as empty or not.
    """

    has_status: bool = False
    api_ready: bool = False
    state: str | None = None
    state_text: str = ""
    state_changed_at: float | None = None
    # (state, wall-clock ms) of each state the page showed, oldest first.
    state_changes: tuple[tuple[str, float], ...] = ()
    retry_shown: bool = False
    attempt: int | None = None
    countdown_ms: float | None = None
    countdown_text: str = ""
    identity: str | None = None
    identity_text: str = ""
    server: str = ""
    client_id: str = ""
    windows: int | None = None
    counters: PageCounters = msgspec.field(default_factory=PageCounters)
    last_error: str = ""
    spool_full: bool = False
    sign_in_shown: bool = False
    sign_out_shown: bool = False
    password_field_empty: bool = True
    action_result: str = ""
    paused: bool = False
    lines: int = 0
    last_line_text: str | None = None
    events: int = 0
    chart: ChartView = msgspec.field(default_factory=ChartView)
    # ---- the window around the page
    timings: WindowTimings = msgspec.field(default_factory=WindowTimings)
    lines_dropped: int = 0
    # Qt's platform plugin (xcb, wayland, offscreen); None off Linux.
    platform: str | None = None
    # The pid of the page's render process (a QtWebEngineProcess child of the host).
    render_process: int | None = None
    # How often the page's render process died and the page was reloaded.
    reloads: int = 0
    geometry: WindowGeometry | None = None
    # The browser profile the page lives in ("off-the-record:<n>"): one per host.
    profile: str | None = None
    # The last WindowControl this window answered.
    control: ControlOutcome | None = None


class WindowState(_Message, frozen=True, tag="window_state"):
    """What one window currently is and shows. A state topic per window
    (``window.<host>.<window>``)."""

    host: int
    window: int
    ready: bool = False
    view: WindowView | None = None
    title: str | None = None
    # The last message for a closed window; the publisher drops it from its cache.
    closed: bool = False

    @property
    def ref(self) -> WindowRef:
        return WindowRef(host=self.host, window=self.window)


WindowAction: TypeAlias = Literal["report", "screenshot", "evaluate"]


class WindowControl(_Message, frozen=True, tag="window_control"):
    """A diagnostics request to the windows (``log-monitor windows`` / ``screenshot``).

    A stream topic (never cached: a window that opens later must not act on an old
    request), received by each renderer host, which hands it to the windows it is meant
    for (``windows``; empty: every window). Each answers by reporting its ``WindowState``
    again, with the outcome as ``view.control``. ``report`` asks for a fresh readback of
    the page, ``screenshot`` for a PNG in ``directory``; ``evaluate`` runs ``script`` in
    the page and is honoured only by hosts started with test hooks enabled (its text
    reaches every subscriber).
    """

    request: str
    action: WindowAction
    windows: tuple[WindowRef, ...] = ()
    directory: str | None = None
    script: str | None = None


class TrayMenuItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """One entry of the tray icon's menu, as a person sees it."""

    text: str
    enabled: bool = True


class TrayState(_Message, frozen=True, tag="tray_state"):
    """The renderer host's tray icon, as the desktop shows it. A state topic (``tray``).

    ``available``: the desktop offers a tray (an XEmbed tray or a StatusNotifier host);
    ``shown``: the icon is in it. ``state`` is the connection state the icon shows (one
    of the four, or None before the first status), ``icon`` the name of the picture
    (``tray-<state>``), ``tooltip`` its text, ``menu`` its entries in order.
    ``messages`` counts the notices shown as the tray's own messages (where the desktop
    has no notification service), ``last_message`` is the last one's title.
    ``geometry``: where the icon is on the screen, when the desktop says. The last message
    for a host that ended has ``closed`` (the publisher drops it from its cache).
    """

    host: int
    available: bool = False
    shown: bool = False
    state: str | None = None
    icon: str = ""
    tooltip: str = ""
    menu: tuple[TrayMenuItem, ...] = ()
    messages: int = 0
    last_message: str | None = None
    geometry: WindowGeometry | None = None
    closed: bool = False


class TrayNotice(_Message, frozen=True, tag="tray_notice"):
    """A notification for the tray of renderer host ``host`` to show as its own message:
    sent only where the desktop has no notification service. A stream topic (``notice``):
    never cached, so a host started later does not show an old notice."""

    host: int
    title: str
    body: str


class HistorySample(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True, rename="camel"
):
    """One second of shipping (an element of ``ShippingHistory``), sent as an array:
    ``[at_ms, sent_bytes_per_s, buffered_chunks]``."""

    at_ms: int
    """Wall-clock time (ms since the epoch) at the end of the second it describes."""
    sent_bytes_per_s: float
    buffered_chunks: int


class ShippingHistory(_Message, frozen=True, tag="shipping_history"):
    """The last minutes of shipping, one sample a second, oldest first: what the windows'
    chart draws. A state topic (``history``): a window opened late gets the whole history
    at once from the cache."""

    interval_ms: int = 1000
    samples: tuple[HistorySample, ...] = ()


class HostControl(_Message, frozen=True, tag="host_control"):
    """What the main process wants of its renderer host ``host`` (a pid). A state topic.

    ``open_requests`` counts the windows asked for since that host was started, beyond
    the ones on its command line; the host opens as many as it has not opened yet. A
    count rather than one message per request: the cached value reaches a host that
    subscribes late, and a repeat opens nothing twice.
    """

    host: int
    open_requests: int = 0


class Heartbeat(_Message, frozen=True, tag="heartbeat"):
    """Sent every second or so: the latest sequence number of every topic.

    A subscriber whose queue overflowed loses the *newest* messages (the high-water mark
    drops what comes after the queue is full), and with no later message it would never
    notice. The heartbeat tells it how far each topic has gone, so it resyncs within one
    interval; its silence tells a viewer that the main process is gone.
    """

    seqs: dict[str, int]
    interval_ms: int


Published: TypeAlias = (
    Status
    | Stats
    | LogLines
    | ServerEvent
    | WindowState
    | WindowControl
    | HostControl
    | Heartbeat
    | TrayState
    | TrayNotice
    | ShippingHistory
)
PUBLISHED_TYPES: Final = (
    Status,
    Stats,
    LogLines,
    ServerEvent,
    WindowState,
    WindowControl,
    HostControl,
    Heartbeat,
    TrayState,
    TrayNotice,
    ShippingHistory,
)

TOPIC_STATUS: Final = b"status"
TOPIC_STATS: Final = b"stats"
TOPIC_LOGS: Final = b"logs"
TOPIC_EVENT: Final = b"event"
# Each window has its own topic "window.<host>.<window>", so each window's last state is
# cached; subscribing to the prefix "window." receives every window.
TOPIC_WINDOW_PREFIX: Final = b"window."
# Diagnostics requests to the windows (``WindowControl``); renderer hosts subscribe to it.
TOPIC_WINDOW_CONTROL: Final = b"control"
# What the main process wants of its renderer host (``HostControl``), cached.
TOPIC_HOST: Final = b"host"
# The renderer host's tray icon (``TrayState``), cached.
TOPIC_TRAY: Final = b"tray"
# Notices for the tray to show where there is no notification service (``TrayNotice``).
TOPIC_NOTICE: Final = b"notice"
# The last minutes of shipping, one sample a second (``ShippingHistory``), cached.
TOPIC_HISTORY: Final = b"history"
# Subscribers always subscribe to it (see ``Heartbeat``); it is delivered to the viewer
# only if the viewer asked for it.
TOPIC_HEARTBEAT: Final = b"hb"

# What a viewer subscribes to for "everything".
ALL_TOPICS: Final = (TOPIC_STATUS, TOPIC_STATS, TOPIC_LOGS, TOPIC_EVENT, TOPIC_WINDOW_PREFIX)
STATE_TOPICS: Final = frozenset({TOPIC_STATUS, TOPIC_STATS, TOPIC_HOST, TOPIC_TRAY, TOPIC_HISTORY})


def topic_for(message: Published) -> bytes:
    """The topic frame ``message`` is published on."""
    if isinstance(message, Status):
        return TOPIC_STATUS
    if isinstance(message, Stats):
        return TOPIC_STATS
    if isinstance(message, LogLines):
        return TOPIC_LOGS
    if isinstance(message, ServerEvent):
        return TOPIC_EVENT
    if isinstance(message, WindowState):
        return TOPIC_WINDOW_PREFIX + f"{message.host}.{message.window}".encode("ascii")
    if isinstance(message, WindowControl):
        return TOPIC_WINDOW_CONTROL
    if isinstance(message, HostControl):
        return TOPIC_HOST
    if isinstance(message, Heartbeat):
        return TOPIC_HEARTBEAT
    if isinstance(message, TrayState):
        return TOPIC_TRAY
    if isinstance(message, TrayNotice):
        return TOPIC_NOTICE
    if isinstance(message, ShippingHistory):
        return TOPIC_HISTORY
    raise TypeError(f"{type(message).__name__} is not a published message type")


def is_state_topic(topic: bytes) -> bool:
    """Whether the last value of ``topic`` is cached and re-sent to late joiners."""
    return topic in STATE_TOPICS or topic.startswith(TOPIC_WINDOW_PREFIX)


# ----------------------------------------------------------------------------- commands


class Connect(_Message, frozen=True, tag="connect"):
    """Start (or restart now, skipping the backoff wait) the server connection."""


class Disconnect(_Message, frozen=True, tag="disconnect"):
    """Close the server connection and stay offline until ``Connect``."""


class Login(_Message, frozen=True, tag="login"):
    """Sign in with a username or e-mail and a password.

    The password goes main-ward exactly once. ``repr()``/``str()`` never show it, so a
    log line, an error message or a status field built from this object cannot leak it.
    """

    identifier: str
    password: str

    def __repr__(self) -> str:
        return f"Login(identifier={self.identifier!r}, password=<hidden>)"

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # msgspec's default rich repr lists every field; list the masked one instead.
        return [("identifier", self.identifier), ("password", "<hidden>")]


class Logout(_Message, frozen=True, tag="logout"):
    """Forget the user's tokens and continue as a guest."""


class OpenWindow(_Message, frozen=True, tag="open_window"):
    """Open one more viewer window (what a second ``log-monitor run`` asks the first);
    answered ``Ok(data={"host": <the renderer host's pid>})``."""


class Snapshot(_Message, frozen=True, tag="snapshot"):
    """Ask for the cached value and sequence number of every state topic (Clone pattern)."""


class GetStatus(_Message, frozen=True, tag="get_status"):
    """Ask for the current ``Status``; answered ``Ok(data=<Status as a dict>)``."""


class Ping(_Message, frozen=True, tag="ping"):
    """Is the main process alive? Answered ``Ok()`` by the command server itself."""


class ReportWindow(_Message, frozen=True, tag="report_window"):
    """A window telling the main process what it is and shows (re-published as state)."""

    state: WindowState


class ReportTray(_Message, frozen=True, tag="report_tray"):
    """The renderer host telling the main process what its tray icon shows (re-published
    as the ``tray`` state)."""

    state: TrayState


class ControlWindows(_Message, frozen=True, tag="control_windows"):
    """Publish ``control`` to the windows; answered ``WindowsInventory``."""

    control: WindowControl


class Shutdown(_Message, frozen=True, tag="shutdown"):
    """Stop the main process (and with it every window)."""


Command: TypeAlias = (
    Connect
    | Disconnect
    | Login
    | Logout
    | OpenWindow
    | Snapshot
    | GetStatus
    | Ping
    | ReportWindow
    | ReportTray
    | ControlWindows
    | Shutdown
)

# ----------------------------------------------------------------------------- replies


class Ok(_Message, frozen=True, tag="ok"):
    """The command was done; ``data`` carries a result when the command has one."""

    data: dict[str, Any] | None = None


class Failed(_Message, frozen=True, tag="failed"):
    """The command was refused or failed.

    ``code`` is machine-readable: ``invalid`` (the request could not be decoded; the
    message is msgspec's error text), ``internal`` (the handler raised), ``busy`` (too
    many requests in flight), ``unavailable`` (nothing to answer with yet), or a code the
    main process defines for its own commands.
    """

    code: str
    message: str


class SnapshotEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """One state topic's cached value with the sequence number it was published under."""

    topic: str
    seq: int
    message: Published


class SnapshotReply(_Message, frozen=True, tag="snapshot_reply"):
    """The reply to ``Snapshot``: the publisher's epoch and every cached state topic."""

    epoch: int
    entries: tuple[SnapshotEntry, ...] = ()


class WindowsInventory(_Message, frozen=True, tag="windows_inventory"):
    """The reply to ``ControlWindows``: the renderer host's pid (None: no host runs), the
    windows the main process knows are open, and what the host last reported of its tray
    (None: no tray reported)."""

    host: int | None = None
    windows: tuple[WindowRef, ...] = ()
    tray: TrayState | None = None


Reply: TypeAlias = Ok | Failed | SnapshotReply | WindowsInventory
REPLY_TYPES: Final = (Ok, Failed, SnapshotReply, WindowsInventory)

# ----------------------------------------------------------------------------- the window report


class WindowAnswer(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel", kw_only=True
):
    """One window in a ``WindowsReport``: its last reported state and whether it answered
    this request (``answered`` false: listed from its last cached state)."""

    ref: WindowRef
    ready: bool
    title: str | None
    answered: bool
    view: WindowView | None = None

    @property
    def host(self) -> int:
        return self.ref.host

    @property
    def window(self) -> int:
        return self.ref.window

    @property
    def fields(self) -> dict[str, Any]:
        """The view as JSON-able fields (camelCase names), empty if none was reported."""
        if self.view is None:
            return {}
        fields = msgspec.to_builtins(self.view)
        assert isinstance(fields, dict)
        return fields

    @property
    def control(self) -> ControlOutcome | None:
        return None if self.view is None else self.view.control

    @property
    def ok(self) -> bool:
        control = self.control
        return self.answered and control is not None and control.ok

    @property
    def result(self) -> Any:
        control = self.control
        return None if control is None else control.result

    @property
    def error(self) -> str | None:
        if not self.answered:
            return "the window did not answer in time"
        control = self.control
        return None if control is None or control.ok else str(control.error)

    def as_dict(self) -> dict[str, Any]:
        """What ``log-monitor windows --json`` prints for this window: its ref, ``ready``,
        ``title`` and ``answered``, then the view's fields (none without a view), then the
        view's ``control``."""
        fields = self.fields
        control = fields.pop("control", None)
        return {
            "host": self.ref.host,
            "window": self.ref.window,
            "ready": self.ready,
            "title": self.title,
            "answered": self.answered,
            **fields,
            "control": control,
        }


class WindowsReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """What ``log-monitor windows`` shows: the renderer host (its pid, or None), its tray
    icon (None: no tray reported) and its windows' answers, in window order.

    Not itself sent: ``ipc.inspection`` assembles it from the ``WindowsInventory`` reply
    and the windows' ``WindowState`` messages."""

    host: int | None
    tray: TrayState | None
    windows: tuple[WindowAnswer, ...]

    def as_dict(self) -> dict[str, Any]:
        """What ``log-monitor windows --json`` prints: ``host``, ``tray`` (the
        ``TrayState`` fields without its tag and ``closed``) and ``windows``."""
        tray = None if self.tray is None else msgspec.to_builtins(self.tray)
        if isinstance(tray, dict):
            tray.pop("type", None)
            tray.pop("closed", None)
        return {
            "host": self.host,
            "tray": tray,
            "windows": [answer.as_dict() for answer in self.windows],
        }


# ----------------------------------------------------------------------------- codecs

# What a decoder can raise on hostile bytes: msgspec's DecodeError (ValidationError is
# one), and UnicodeDecodeError (a ValueError) for invalid UTF-8 in a tag, which msgspec
# 0.22 lets through (found by tests/integration/test_ipc_fuzz.py).
DECODE_ERRORS: Final = (msgspec.DecodeError, ValueError)

ENCODER: Final = msgspec.msgpack.Encoder()
PUBLISHED_DECODER: Final[msgspec.msgpack.Decoder[Published]] = msgspec.msgpack.Decoder(Published)
COMMAND_DECODER: Final[msgspec.msgpack.Decoder[Command]] = msgspec.msgpack.Decoder(Command)
REPLY_DECODER: Final[msgspec.msgpack.Decoder[Reply]] = msgspec.msgpack.Decoder(Reply)
_JSON_ENCODER: Final = msgspec.json.Encoder()


def encode(message: Published | Command | Reply) -> bytes:
    """The msgpack body of ``message``."""
    return ENCODER.encode(message)


def to_json(message: Published | Reply) -> bytes:
    """``message`` as JSON (camelCase names, ``"type"`` tag) for the renderer's page."""
    return _JSON_ENCODER.encode(message)
