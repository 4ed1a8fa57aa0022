"""The process environment a window needs before pywebview and Qt are imported.

Owns: choosing the GUI backend and the environment variables Qt WebEngine reads at start.

* Linux uses pywebview's Qt backend with the **PySide6** binding (LGPL, so the package
  can be shipped under any licence; PyQt6 is GPL). ``QT_API=pyside6`` makes qtpy, which
  pywebview uses, pick PySide6 even if PyQt is also installed, so one process never loads
  two Qt libraries. Windows and macOS use pywebview's native backends (WebView2, WKWebKit).
  ``LOG_MONITOR_GUI=native`` has the Linux host run as it does there, pywebview's own
  loop with no Qt of the host's own (pywebview picks its backend, ``PYWEBVIEW_GUI``): a
  diagnostic, with which the tests run the Windows host's path on Linux.
* Without a display (no ``DISPLAY`` nor ``WAYLAND_DISPLAY``) Qt's default platform plugin
  would abort the process; ``offscreen`` renders into memory instead, so diagnostics
  (describe, screenshots) and tests still work. Offscreen there is no GPU to draw with:
  ``QT_QUICK_BACKEND=software`` has Qt draw the windows in software from the start
  instead of loading Mesa's software OpenGL (and LLVM) only to fall back (measured: 60 MiB
  less for the renderer host, whatever its number of windows).
* Chromium refuses to run its sandbox as root; ``--no-sandbox`` is set only for root and
  only when the user has not set ``QTWEBENGINE_CHROMIUM_FLAGS`` themselves.

Everything here is decided from arguments, so it is testable without touching
``os.environ``; ``prepare`` applies the result to the real environment.

Must not: import pywebview or Qt (these variables are read when they are imported).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

# The pywebview backends this package starts explicitly (None: the platform default).
Gui: TypeAlias = Literal["qt"]
# ``native``: the host runs pywebview's own loop on Linux too (see the module docstring).
GUI_VARIABLE = "LOG_MONITOR_GUI"


@dataclass(frozen=True, slots=True)
class GuiChoice:
    """Which pywebview backend to start, and what was set in the environment for it."""

    gui: Gui | None
    changed: dict[str, str] = field(default_factory=dict)


def choose_gui(
    environ: MutableMapping[str, str],
    *,
    platform: str = sys.platform,
    euid: int | None = None,
    force_offscreen: bool = False,
) -> GuiChoice:
    """Pick the backend and set (in ``environ``) what Qt needs; return what was set."""
    if not platform.startswith("linux"):
        return GuiChoice(gui=None)  # pywebview's native default for the platform
    changed: dict[str, str] = {}

    def set_default(name: str, value: str) -> None:
        if name not in environ:
            environ[name] = value
            changed[name] = value

    set_default("QT_API", "pyside6")
    if force_offscreen:
        if environ.get("QT_QPA_PLATFORM") != "offscreen":
            environ["QT_QPA_PLATFORM"] = "offscreen"
            changed["QT_QPA_PLATFORM"] = "offscreen"
    elif not environ.get("DISPLAY") and not environ.get("WAYLAND_DISPLAY"):
        set_default("QT_QPA_PLATFORM", "offscreen")
    if environ.get("QT_QPA_PLATFORM") == "offscreen":
        set_default("QT_QUICK_BACKEND", "software")
    if euid is None:
        euid = os.geteuid()
    if euid == 0:
        set_default("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox")
    return GuiChoice(gui=None if environ.get(GUI_VARIABLE) == "native" else "qt", changed=changed)


def prepare(force_offscreen: bool = False) -> GuiChoice:
    """Apply ``choose_gui`` to this process's environment."""
    return choose_gui(os.environ, force_offscreen=force_offscreen)
