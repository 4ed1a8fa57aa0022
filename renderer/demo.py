"""Demo mode: a window fed from JSON lines instead of ipc, for tests and for trying the UI.

``python -m renderer --demo-feed FILE|- --report FILE|-`` reads one JSON object per line:

* an ``ipc.messages`` published message, exactly as ``ipc.messages.to_json`` writes it
  (``{"type": "status", "state": "connected", ...}``, ``{"type": "log_lines", "lines":
  [{"path": ..., "text": ...}]}``, ``{"type": "server_event", "payload": {...}}``, ...),
  which goes through the same bridge as in production (a ``window_state`` is accepted and
  ignored: a page shows no other window's state);
* a request, answered on the report stream with ``{"event": "reply", "id": ...,
  "result": ...}`` or ``{"event": "reply", "id": ..., "error": "..."}``:
  ``{"type": "describe", "id": ...}``, ``{"type": "screenshot", "id": ..., "path": ...}``,
  ``{"type": "evaluate", "id": ..., "script": ...}`` (runs JavaScript in the page: a test
  hook that exists only in demo mode), ``{"type": "fail_next_command", "code": ...,
  "message": ...}`` (the next command gets that ``Failed`` reply).

End of input means "the main process is gone": the window closes, as it would in
production. Reports are JSON lines too: ``loaded``, ``ready`` (with start-up timings),
``command`` (what a click sent; a password appears only as its length), ``reply``,
``bad_line``, ``closing``.

Must not: be reachable without ``--demo-feed``; the ``evaluate`` request is a test hook.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeAlias

import msgspec

from ipc.messages import (
    Command,
    Failed,
    Login,
    LogLines,
    Ok,
    Reply,
    ServerEvent,
    ShippingHistory,
    Stats,
    Status,
    WindowState,
)
from renderer.feed import UpdateSink

log = logging.getLogger(__name__)


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    pass


class DescribeRequest(_Request, frozen=True, tag="describe"):
    id: str


class ScreenshotRequest(_Request, frozen=True, tag="screenshot"):
    id: str
    path: str


class EvaluateRequest(_Request, frozen=True, tag="evaluate"):
    id: str
    script: str


class FailNextCommand(_Request, frozen=True, tag="fail_next_command"):
    code: str
    message: str


AnsweredRequest: TypeAlias = DescribeRequest | ScreenshotRequest | EvaluateRequest
DemoRequest: TypeAlias = AnsweredRequest | FailNextCommand
DemoLine: TypeAlias = (
    Status
    | Stats
    | LogLines
    | ServerEvent
    | ShippingHistory
    | WindowState
    | DescribeRequest
    | ScreenshotRequest
    | EvaluateRequest
    | FailNextCommand
)
_DECODER = msgspec.json.Decoder(DemoLine)
_ENCODER = msgspec.json.Encoder()


class ReportWriter:
    """Writes one JSON object per line to the report stream; safe from any thread."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        line = _ENCODER.encode({"event": event, **fields}).decode()
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the reader went away; the window carries on regardless


class DemoFeed:
    """``UpdateSource`` over a stream of JSON lines; requests go to ``on_request``, the end
    of the stream to ``on_end`` (to the window, the main process is gone)."""

    def __init__(
        self,
        stream: IO[str],
        report: ReportWriter,
        on_request: Callable[[DemoRequest], None],
        on_end: Callable[[str], None],
    ) -> None:
        self._stream = stream
        self._report = report
        self._on_request = on_request
        self._on_end = on_end
        self._sink: UpdateSink | None = None
        self._closed = threading.Event()

    def attach(self, sink: UpdateSink) -> None:
        self._sink = sink
        threading.Thread(target=self._read, name="demo-feed-reader", daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                if self._closed.is_set():
                    return
                if not raw.strip():
                    continue
                try:
                    item = _DECODER.decode(raw)
                except msgspec.DecodeError as exc:  # includes ValidationError
                    self._report("bad_line", {"error": str(exc)})
                    continue
                if isinstance(
                    item, DescribeRequest | ScreenshotRequest | EvaluateRequest | FailNextCommand
                ):
                    self._on_request(item)
                elif self._sink is not None and not isinstance(item, WindowState):
                    self._sink(item)
        except (OSError, ValueError) as exc:
            log.warning("reading the demo feed failed: %s", exc)
        if not self._closed.is_set():
            self._on_end("the demo feed has ended")

    def close(self) -> None:
        self._closed.set()


class DemoCommandSender:
    """``CommandSender`` that reports each command and answers ``Ok`` (or a set failure)."""

    def __init__(self, report: ReportWriter) -> None:
        self._report = report
        self._lock = threading.Lock()
        self._next_failure: Failed | None = None

    def fail_next(self, code: str, message: str) -> None:
        with self._lock:
            self._next_failure = Failed(code=code, message=message)

    def send(self, command: Command, timeout: float) -> Reply:
        fields: dict[str, Any] = msgspec.to_builtins(command)
        if isinstance(command, Login):
            # The demo proves the password arrived without ever writing it anywhere.
            fields["password"] = "<hidden>"
            fields["passwordLength"] = len(command.password)
        self._report("command", {"command": fields})
        with self._lock:
            failure, self._next_failure = self._next_failure, None
        return failure if failure is not None else Ok()


class Diagnostics:
    """Answers demo requests on its own thread, once the window is ready."""

    def __init__(self, report: ReportWriter, sender: DemoCommandSender) -> None:
        self._report = report
        self._sender = sender
        self._window: Any = None
        self._window_set = threading.Event()
        self._requests: queue.Queue[AnsweredRequest] = queue.Queue()
        threading.Thread(target=self._serve, name="demo-diagnostics", daemon=True).start()

    def attach(self, window: Any) -> None:
        """``window`` is a ``renderer.window.RendererWindow`` (kept loose to avoid a cycle)."""
        self._window = window
        self._window_set.set()

    def submit(self, request: DemoRequest) -> None:
        if isinstance(request, FailNextCommand):
            self._sender.fail_next(request.code, request.message)
            return
        self._requests.put(request)

    def _serve(self) -> None:
        self._window_set.wait()
        while True:
            request = self._requests.get()
            try:
                result = self._answer(request)
            except Exception as exc:
                self._report("reply", {"id": request.id, "error": f"{type(exc).__name__}: {exc}"})
            else:
                self._report("reply", {"id": request.id, "result": result})

    def _answer(self, request: AnsweredRequest) -> Any:
        window = self._window
        if isinstance(request, DescribeRequest):
            return window.describe()
        if isinstance(request, ScreenshotRequest):
            return window.take_screenshot(Path(request.path))
        if isinstance(request, EvaluateRequest):
            return window.evaluate(request.script)
        raise TypeError(f"unexpected request {type(request).__name__}")
