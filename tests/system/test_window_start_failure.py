"""The sentence for a window that could not start (``main_process.window_start_failure``).

Qt's own words come from real runs of ``python -m renderer`` made to fail (a Wayland
socket nobody listens on, no ``XDG_RUNTIME_DIR``), or are the text Qt 6.11 printed on this
machine while libxcb-icccm4 and libxcb-keysyms1 were missing. Library checks run the real
``ldd`` on the real plugin files, and the soname-to-package rule is checked against
Debian's own package database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.server_process import REPOSITORY
from main_process.window_start_failure import (
    debian_package,
    explain_start_failure,
    libraries_not_found,
    plugin_missing_libraries,
)

# What Qt 6.11.3 wrote when its xcb plugin could not be loaded for want of
# libxcb-icccm.so.4 and libxcb-keysyms.so.1 (libxcb-cursor0 was installed).
QT_XCB_NOT_LOADED = """\
qt.qpa.plugin: From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform plugin.
qt.qpa.plugin: Could not load the Qt platform plugin "xcb" in "" even though it was found.
This application failed to start because no Qt platform plugin could be initialized. Reinstalling the application may fix this problem.

Available platform plugins are: minimal, linuxfb, offscreen, xcb, wayland-brcm, wayland-egl, wayland, eglfs, vnc, vkkhrdisplay, minimalegl.
"""
SIGABRT = -6


def failed_window_stderr(env: dict[str, str | None]) -> tuple[str, int]:
    """Run a window with ``env`` applied, which must make Qt fail; its stderr and status."""
    environ = dict(os.environ)
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    result = subprocess.run(
        [sys.executable, "-m", "renderer", "--demo-feed", os.devnull, "--report", os.devnull],
        cwd=REPOSITORY,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stderr
    return result.stderr, result.returncode


def test_missing_libraries_are_named_with_the_packages_to_install() -> None:
    sentence = explain_start_failure(
        QT_XCB_NOT_LOADED,
        SIGABRT,
        {"DISPLAY": ":0"},
        missing_libraries=lambda plugin: (
            ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"] if plugin == "xcb" else []
        ),
    )
    assert sentence == (
        "Windows cannot open: Qt's xcb platform plugin needs libxcb-icccm.so.4 and "
        "libxcb-keysyms.so.1, which are not installed (on Debian or Ubuntu: apt-get install "
        "libxcb-icccm4 libxcb-keysyms1)."
    )


def test_qt_blaming_xcb_cursor_is_not_believed_when_nothing_is_missing() -> None:
    sentence = explain_start_failure(
        QT_XCB_NOT_LOADED, SIGABRT, {}, missing_libraries=lambda plugin: []
    )
    assert sentence == 'Windows cannot open: Qt could not load its platform plugin "xcb".'
    assert "cursor" not in sentence


def test_the_installed_platform_plugins_miss_no_library() -> None:
    """What scripts/system-deps.sh installs is all Qt's xcb and wayland plugins need."""
    assert plugin_missing_libraries("xcb") == []
    assert plugin_missing_libraries("wayland") == []
    assert plugin_missing_libraries("wayland-egl") == []


def test_ldd_names_what_a_plugin_cannot_find(tmp_path: Path) -> None:
    """The xcb plugin copied away from the Qt libraries its RUNPATH points to."""
    import PySide6

    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    copy = tmp_path / "libqxcb.so"
    shutil.copyfile(plugin, copy)
    missing = libraries_not_found(copy)
    assert "libQt6XcbQpa.so.6" in missing
    assert "libQt6Gui.so.6" in missing
    assert libraries_not_found(plugin) == []


@pytest.mark.parametrize(
    "soname",
    [
        "libxcb-cursor.so.0",
        "libxcb-icccm.so.4",
        "libxcb-keysyms.so.1",
        "libxcb-image.so.0",
        "libxcb-render-util.so.0",
        "libxcb-xinerama.so.0",
        "libxcb-xkb.so.1",
        "libxkbcommon-x11.so.0",
        "libxcb-shape.so.0",
        "libwayland-cursor.so.0",
        "libwayland-egl.so.1",
    ],
)
def test_a_sonames_package_is_the_one_debian_ships_it_in(soname: str) -> None:
    found = subprocess.run(
        ["dpkg-query", "-S", f"*/{soname}"], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0, found.stderr
    owners = {line.split(":")[0] for line in found.stdout.splitlines()}
    assert debian_package(soname) in owners


def test_a_platform_plugin_qt_does_not_have() -> None:
    stderr, code = failed_window_stderr({"QT_QPA_PLATFORM": "nosuch", "DISPLAY": ":0"})
    sentence = explain_start_failure(stderr, code, {"QT_QPA_PLATFORM": "nosuch"})
    assert sentence.startswith(
        'Windows cannot open: Qt has no platform plugin "nosuch" (QT_QPA_PLATFORM); it has '
    )
    assert ", xcb," in sentence
    assert sentence.endswith(".")
    assert "\n" not in sentence


def test_a_wayland_socket_nobody_listens_on(tmp_path: Path) -> None:
    socket = str(tmp_path / "wayland-9")
    env: dict[str, str | None] = {"QT_QPA_PLATFORM": "wayland", "WAYLAND_DISPLAY": socket}
    stderr, code = failed_window_stderr(env)
    assert code == SIGABRT
    sentence = explain_start_failure(stderr, code, {"WAYLAND_DISPLAY": socket})
    assert sentence == (
        f"Windows cannot open: no Wayland compositor answers on {socket} (WAYLAND_DISPLAY); "
        "start one there, or run with --headless."
    )


def test_wayland_without_a_runtime_dir() -> None:
    env: dict[str, str | None] = {
        "QT_QPA_PLATFORM": "wayland",
        "WAYLAND_DISPLAY": "wayland-0",
        "XDG_RUNTIME_DIR": None,
    }
    stderr, code = failed_window_stderr(env)
    sentence = explain_start_failure(stderr, code, {"WAYLAND_DISPLAY": "wayland-0"})
    assert sentence == (
        "Windows cannot open: Qt's wayland platform plugin needs XDG_RUNTIME_DIR, which is not set."
    )


def test_any_other_early_end_quotes_the_last_line() -> None:
    stderr = "renderer: No log-monitor main process is running for data directory /d.\n\n"
    assert explain_start_failure(stderr, 1, {}) == (
        "Windows cannot open: the renderer host ended before it showed a window (exit status 1; "
        'its last words: "renderer: No log-monitor main process is running for data directory /d").'
    )
    assert explain_start_failure("", -9, {}) == (
        "Windows cannot open: the renderer host ended before it showed a window (killed by SIGKILL)."
    )
    # A long last line is cut to MAX_QUOTED_CHARS characters.
    assert explain_start_failure("x" * 500, 1, {}).endswith(f'"{"x" * 199}…").')
