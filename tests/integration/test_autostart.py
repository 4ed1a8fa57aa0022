"""``log-monitor autostart on|off|status``: the entries it writes start the client as they
say, and ``off`` removes them and nothing else.

On Linux the real thing: the freedesktop files are written by the real CLI into a
temporary ``XDG_CONFIG_HOME``/``XDG_DATA_HOME``, checked by Debian's
``desktop-file-validate``, and the autostart entry's ``Exec`` line is run to show that it
starts a main process that ships the configured sources. macOS's LaunchAgent and
Windows' Run value cannot be exercised here: their files and values are checked with a
temporary home and a stand-in for ``winreg``.
"""

from __future__ import annotations

import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.main_process_runner import MainProcessRunner, headless_environment
from harness.server_process import REPOSITORY
from main_process.autostart import (
    LAUNCH_AGENT_LABEL,
    RUN_KEY,
    RunKeyAutostart,
    autostart_for,
    desktop_exec,
    invocation,
)


def _environment(tmp_path: Path) -> dict[str, str]:
    env = headless_environment()
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_DATA_HOME"] = str(tmp_path / "share")
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "main_process", *args],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status_of(data: Path) -> MainProcessRunner:
    """A runner that only asks: the main process was started by someone else."""
    return MainProcessRunner(data)


def _desktop_keys(path: Path) -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, separator, value = line.partition("=")
        if separator:
            keys[name] = value
    return keys


def test_on_writes_entries_that_start_the_client_and_off_removes_them(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    data = tmp_path / "data with space"
    log = tmp_path / "logs" / "game.log"
    log.parent.mkdir()
    log.write_text("first line\n")
    config = tmp_path / "settings.toml"
    config.write_text(f"sources = [{str(log)!r}]\n".replace("'", '"'))

    on = _cli(env, "autostart", "on", "--data-dir", str(data), "--config", str(config))
    assert on.returncode == 0, on.stderr
    assert "autostart on" in on.stdout
    autostart_files = list((tmp_path / "config" / "autostart").glob("log-monitor*.desktop"))
    launchers = list((tmp_path / "share" / "applications").glob("log-monitor*.desktop"))
    assert len(autostart_files) == 1
    assert len(launchers) == 1
    icon = tmp_path / "share" / "icons" / "hicolor" / "scalable" / "apps" / "log-monitor.svg"
    assert icon.read_bytes().startswith(b"<svg")
    validator = shutil.which("desktop-file-validate")
    assert validator is not None, "scripts/system-deps.sh installs desktop-file-utils"
    for path in (*autostart_files, *launchers):
        checked = subprocess.run([validator, str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout
        assert not checked.stdout.strip(), checked.stdout

    entry = _desktop_keys(autostart_files[0])
    arguments = shlex.split(entry["Exec"])
    assert arguments[:5] == [sys.executable, "-m", "main_process", "run", "--windows"]
    assert arguments[5] == "0"
    assert arguments[arguments.index("--data-dir") + 1] == str(data)
    assert arguments[arguments.index("--config") + 1] == str(config)
    assert shlex.split(_desktop_keys(launchers[0])["Exec"])[3:4] == ["run"]

    # What the desktop runs at login, word for word: the configured source is shipped,
    # no window opens.
    process = subprocess.Popen(
        arguments, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        status = status_of(data).wait_for_status(
            lambda s: s["state"] == "connected" and s["sentChunks"] >= 1, 30, "the first line"
        )
        assert status["windows"] == 0
    finally:
        process.terminate()
        process.wait(30)

    asked = _cli(env, "autostart", "status", "--data-dir", str(data))
    assert "autostart on" in asked.stdout
    off = _cli(env, "autostart", "off", "--data-dir", str(data))
    assert off.returncode == 0, off.stderr
    assert "autostart off" in off.stdout
    assert not autostart_files[0].exists()
    assert not launchers[0].exists()
    assert not icon.exists()


def test_off_leaves_entries_it_did_not_write_and_on_refuses_to_replace_them(
    tmp_path: Path,
) -> None:
    env = _environment(tmp_path)
    mine = tmp_path / "config" / "autostart" / "log-monitor.desktop"
    mine.parent.mkdir(parents=True)
    mine.write_text("[Desktop Entry]\nType=Application\nName=Mine\nExec=true\n")
    other = tmp_path / "config" / "autostart" / "other.desktop"
    other.write_text("[Desktop Entry]\nType=Application\nName=Other\nExec=true\n")

    on = _cli(env, "autostart", "on")
    assert on.returncode == 1
    assert "was not written by log-monitor" in on.stderr
    off = _cli(env, "autostart", "off")
    assert off.returncode == 0
    assert "left alone" in off.stdout
    assert mine.read_text().startswith("[Desktop Entry]\nType=Application\nName=Mine")
    assert other.exists()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["/usr/bin/python3", "-m", "x"], "/usr/bin/python3 -m x"),
        (["/opt/my apps/python"], '"/opt/my apps/python"'),
        (['say "hi"'], '"say \\"hi\\""'),
        (["$HOME", "a\\b", "50%"], '"\\$HOME" "a\\\\b" 50%%'),
        ([""], '""'),
    ],
)
def test_exec_lines_are_quoted_as_the_desktop_entry_specification_says(
    arguments: list[str], expected: str
) -> None:
    assert desktop_exec(arguments) == expected


def test_macos_launch_agent(tmp_path: Path) -> None:
    entry = autostart_for(
        invocation(tmp_path / "data", None), platform="darwin", environ={}, home=tmp_path
    )
    report = entry.enable()
    assert report.enabled
    plist = tmp_path / "Library" / "LaunchAgents"
    (path,) = plist.glob(f"{LAUNCH_AGENT_LABEL}-*.plist")
    content = plistlib.loads(path.read_bytes())
    assert content["RunAtLoad"] is True
    assert content["ProgramArguments"][1:6] == ["-m", "main_process", "run", "--windows", "0"]
    assert entry.disable().enabled is False
    assert not path.exists()
    # Someone else's plist of the same name stays.
    path.write_bytes(plistlib.dumps({"Label": "theirs"}))
    assert entry.disable().notes
    assert path.exists()


class StandInRegistry:
    """``winreg``'s calls used by ``RunKeyAutostart``, on a dict (values of HKCU only)."""

    HKEY_CURRENT_USER = 1
    KEY_READ = 0x20019
    KEY_SET_VALUE = 0x0002
    REG_SZ = 1

    def __init__(self) -> None:
        self.values: dict[str, dict[str, str]] = {}

    def OpenKey(self, key: int, sub_key: str, reserved: int, access: int) -> Any:
        if sub_key not in self.values:
            raise FileNotFoundError(sub_key)
        return sub_key

    def CreateKey(self, key: int, sub_key: str) -> Any:
        self.values.setdefault(sub_key, {})
        return sub_key

    def QueryValueEx(self, key: Any, name: str) -> tuple[Any, int]:
        if name not in self.values[key]:
            raise FileNotFoundError(name)
        return self.values[key][name], self.REG_SZ

    def SetValueEx(self, key: Any, name: str, reserved: int, kind: int, value: str) -> None:
        assert kind == self.REG_SZ
        self.values[key][name] = value

    def DeleteValue(self, key: Any, name: str) -> None:
        del self.values[key][name]

    def CloseKey(self, key: Any) -> None:
        pass


def test_windows_run_value(tmp_path: Path) -> None:
    registry = StandInRegistry()
    run = invocation(tmp_path / "data dir", None)
    entry = autostart_for(run, platform="win32", registry=lambda: registry)
    assert isinstance(entry, RunKeyAutostart)
    assert entry.enable().enabled
    command = registry.values[RUN_KEY][entry.value_name]
    assert " -m main_process run --windows 0 --data-dir " in command
    assert f'"{tmp_path / "data dir"}"' in command
    assert not entry.disable().enabled
    assert entry.value_name not in registry.values[RUN_KEY]
    registry.values[RUN_KEY][entry.value_name] = r"C:\Other\thing.exe"
    assert entry.disable().notes
    assert registry.values[RUN_KEY][entry.value_name] == r"C:\Other\thing.exe"
