"""Why the renderer host ended before it showed a window, in one sentence a person can act on.

Owns ``explain_start_failure``: the main process (``main_process.windows``) hands it what
the renderer host wrote to stderr before it ended, its exit status and the environment it
was started with, and gets one sentence back, naming what is missing and how to install it when that can be
told. The usual cause is Qt's platform plugin: Qt prints a few ``qt.qpa`` lines, then
"This application failed to start because no Qt platform plugin could be initialized"
and aborts (exit status -6, SIGABRT). Those lines are recognised here:

* ``Could not find the Qt platform plugin "X"``: ``QT_QPA_PLATFORM`` names a plugin Qt
  does not have; the sentence lists the ones it has.
* ``could not connect to display D`` (xcb) and ``Failed to create wl_display`` (wayland):
  the plugin loaded but no display server answers.
* ``Could not load the Qt platform plugin "X" … even though it was found``: usually a
  shared library the plugin needs is not installed. Qt 6.5+ then also prints "xcb-cursor0
  or libxcb-cursor0 is needed" whatever is missing (it says so with libxcb-cursor0
  installed and libxcb-icccm4 missing), so the libraries are not taken from Qt's text:
  the plugin file itself is checked with ``ldd`` (what it links that cannot be found) and
  ``libxcb-cursor.so.0``, which the xcb plugin loads at run time, through the linker cache.
  A library's Debian package name follows from its soname (``libxcb-icccm.so.4`` is in
  ``libxcb-icccm4``), which is how the sentence says what to install.

Anything else gets the exit status and the process's last line.

It lives in the main process, the only side that reads the host's stderr, and knows Qt
only by the text Qt prints. Must not: load Qt or any code of ``renderer`` (the main
process never does), or take long: it runs on a window's stderr reader thread, ``ldd`` is
bounded by a timeout.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

LDD_TIMEOUT_S = 10.0
MAX_QUOTED_CHARS = 200
PREFIX = "Windows cannot open: "

_NOT_FOUND = re.compile(r'Could not find the Qt platform plugin "([^"]*)"')
_NOT_LOADED = re.compile(r'Could not load the Qt platform plugin "([^"]*)"')
_AVAILABLE = re.compile(r"Available platform plugins are: ([^\n]*?)\.?\s*$", re.MULTILINE)
_NO_X_SERVER = re.compile(r"could not connect to display ?([^\s]*)")
_NO_COMPOSITOR = "Failed to create wl_display"
_NO_RUNTIME_DIR = "XDG_RUNTIME_DIR is invalid or not set"
_NOT_FOUND_LIBRARY = re.compile(r"^\s*(\S+) => not found", re.MULTILINE)
# Qt 6.5+'s xcb plugin loads this one with dlopen, so ldd cannot see it.
_XCB_CURSOR = "libxcb-cursor.so.0"

MissingLibraries = Callable[[str], list[str]]


def explain_start_failure(
    stderr: str,
    exit_status: int | None,
    environ: Mapping[str, str],
    missing_libraries: MissingLibraries | None = None,
) -> str:
    """One sentence saying why a window ended before it was ready; see the module doc."""
    find_missing = plugin_missing_libraries if missing_libraries is None else missing_libraries
    unknown = _NOT_FOUND.search(stderr)
    if unknown:
        available = _AVAILABLE.search(stderr)
        has = f"; it has {available.group(1)}" if available else ""
        return f'{PREFIX}Qt has no platform plugin "{unknown.group(1)}" (QT_QPA_PLATFORM){has}.'
    not_loaded = _NOT_LOADED.search(stderr)
    if not_loaded:
        plugin = not_loaded.group(1)
        no_x = _NO_X_SERVER.search(stderr)
        if no_x:
            display = no_x.group(1) or environ.get("DISPLAY", "")
            return (
                f"{PREFIX}no X server answers on display {display} (DISPLAY); "
                "start one there, or run with --headless."
            )
        if _NO_RUNTIME_DIR in stderr:
            return f"{PREFIX}Qt's {plugin} platform plugin needs XDG_RUNTIME_DIR, which is not set."
        if _NO_COMPOSITOR in stderr:
            wayland = environ.get("WAYLAND_DISPLAY", "wayland-0")
            return (
                f"{PREFIX}no Wayland compositor answers on {wayland} (WAYLAND_DISPLAY); "
                "start one there, or run with --headless."
            )
        missing = find_missing(plugin)
        if missing:
            packages = " ".join(dict.fromkeys(debian_package(name) for name in missing))
            which = "is" if len(missing) == 1 else "are"
            return (
                f"{PREFIX}Qt's {plugin} platform plugin needs {_and(missing)}, which {which} "
                f"not installed (on Debian or Ubuntu: apt-get install {packages})."
            )
        words = _last_words(stderr, skip_generic=True)
        said = f" ({words})" if words else ""
        return f'{PREFIX}Qt could not load its platform plugin "{plugin}"{said}.'
    words = _last_words(stderr)
    said = f"; its last words: {words}" if words else ""
    return (
        f"{PREFIX}the renderer host ended before it showed a window "
        f"({_exit_status_text(exit_status)}{said})."
    )


def plugin_missing_libraries(plugin: str) -> list[str]:
    """The shared libraries Qt's ``plugin`` platform plugin needs that are not installed."""
    path = _plugin_file(plugin)
    if path is None:
        return []
    missing = libraries_not_found(path)
    if plugin == "xcb" and ctypes.util.find_library("xcb-cursor") is None:
        missing.append(_XCB_CURSOR)
    return missing


def libraries_not_found(path: Path) -> list[str]:
    """The sonames ``path`` links that the dynamic linker cannot find (``ldd``)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    try:
        result = subprocess.run(
            [ldd, str(path)],
            capture_output=True,
            text=True,
            timeout=LDD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return list(dict.fromkeys(_NOT_FOUND_LIBRARY.findall(result.stdout)))


def debian_package(soname: str) -> str:
    """The Debian package a shared library is in, by Debian's naming policy.

    ``libxcb-icccm.so.4`` → ``libxcb-icccm4``; a name ending in a digit takes a hyphen:
    ``libxkbcommon-x11.so.0`` → ``libxkbcommon-x11-0``.
    """
    name, sep, version = soname.partition(".so.")
    if not sep:
        return soname.removesuffix(".so")
    major = version.split(".")[0]
    return f"{name}-{major}" if name[-1:].isdigit() else f"{name}{major}"


def _plugin_file(plugin: str) -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    platforms = Path(next(iter(spec.submodule_search_locations))) / "Qt" / "plugins" / "platforms"
    # "wayland-egl" and "wayland-brcm" are served by libqwayland.so.
    for name in (plugin, plugin.split("-")[0]):
        candidate = platforms / f"libq{name}.so"
        if candidate.is_file():
            return candidate
    return None


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _exit_status_text(exit_status: int | None) -> str:
    if exit_status is None:
        return "exit status unknown"
    if exit_status < 0:
        try:
            return f"killed by {signal.Signals(-exit_status).name}"
        except ValueError:
            return f"killed by signal {-exit_status}"
    return f"exit status {exit_status}"


# Qt's closing lines, the same for every platform plugin failure: they say nothing new.
_GENERIC = (
    "This application failed to start because",
    "Available platform plugins are",
    "From 6.5.0, xcb-cursor0",
    "Could not load the Qt platform plugin",
)


def _last_words(stderr: str, *, skip_generic: bool = False) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if skip_generic:
        lines = [line for line in lines if not any(g in line for g in _GENERIC)]
    if not lines:
        return ""
    last = lines[-1].rstrip(".")
    if len(last) > MAX_QUOTED_CHARS:
        last = last[: MAX_QUOTED_CHARS - 1] + "…"
    return f'"{last}"'
