"""Qt-only window work: screenshots on the GUI thread, and which platform Qt runs on.

Owns: ``GuiThreadCall``, which runs a function on the Qt GUI thread from any other thread
and waits for its result, or does not wait (a queued signal to a ``QObject`` living on the
GUI thread),
``grab_image`` and ``save_png``, which render a widget into a PNG file, and
``platform_name``.

Imported only when the Qt backend runs (Linux); PySide6 is the binding chosen in
``renderer.environment``.

Must not: be imported before the ``QApplication`` exists, or on platforms without Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import QWidget

T = TypeVar("T")


class GuiThreadCall(QObject):
    """Runs callables on the GUI thread; create it from any thread once the app exists."""

    _requested = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        app = QCoreApplication.instance()
        if app is None:
            raise RuntimeError("the Qt application does not exist yet")
        # Queued: the slot runs in the receiver's thread, i.e. the GUI thread's event loop.
        self.moveToThread(app.thread())
        self._requested.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def _run(self, job: Callable[[], None]) -> None:
        job()

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the GUI thread soon; do not wait for it (from any thread)."""
        self._requested.emit(fn)

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()`` run on the GUI thread; raises ``TimeoutError`` if it does not finish."""
        if threading.current_thread() is threading.main_thread():
            return fn()  # already on the GUI thread (Qt's loop runs on the main thread)
        future: Future[T] = Future()

        def job() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._requested.emit(job)
        return future.result(timeout)


def grab_image(widget: QWidget) -> QImage:
    """What ``widget`` shows now, rendered into an image (GUI thread)."""
    pixmap = widget.grab()
    if pixmap.isNull():
        raise OSError("the window could not be captured")
    return pixmap.toImage()


def save_png(image: QImage, path: Path) -> tuple[int, int]:
    """Write ``image`` to the PNG file ``path``; return its size in pixels."""
    if not QPixmap.fromImage(image).save(str(path), "PNG"):
        raise OSError(f"could not write {path}")
    return image.width(), image.height()


def platform_name() -> str:
    """The Qt platform plugin this process runs on (``xcb``, ``wayland``, ``offscreen``).

    Fixed once the application exists, so it can be read from any thread.
    """
    return QGuiApplication.platformName()
