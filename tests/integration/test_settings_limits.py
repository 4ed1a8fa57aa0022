"""Numeric settings are finite and within their documented ranges, whatever layer they come
from (TOML file, ``LOG_MONITOR_*``, flags): a bad one is one sentence naming it and exit
status 2, never a traceback and never a value that breaks the main process later."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from main_process.settings import (
    NUMERIC_RANGES,
    SettingsError,
    SettingsLayer,
    checked_flag_layer,
    merge,
    read_environment_layer,
    read_file_layer,
)

pytestmark = pytest.mark.timeout(120)

# Every numeric setting, with values outside its range (non-finite ones included).
BAD_VALUES: dict[str, list[str]] = {
    "windows": ["-1", "17", "99999999999999999999"],
    "window": ["0", "257", "99999999999999999999"],
    "ack_timeout": ["nan", "inf", "-inf", "0", "0.05", "3601", "1e400"],
    "ping_interval": ["nan", "inf", "0", "3601"],
    "silence_timeout": ["nan", "inf", "0", "3601"],
    "spool_max_mb": ["nan", "inf", "0", "0.5", "1048577"],
    "chunk_kib": ["0", "8193", "99999999999999999999"],
    "chunk_linger_ms": ["nan", "inf", "-1", "60001"],
    "notify_unreachable_after": ["nan", "inf", "0", "0.5", "86401"],
    "forget_after_days": ["nan", "inf", "0", "0.0001", "3651"],
}
WHOLE = {"windows", "window", "chunk_kib"}
FLAGS = {
    "windows": "--windows",
    "window": "--window",
    "ack_timeout": "--ack-timeout",
    "ping_interval": "--ping-interval",
    "silence_timeout": "--silence-timeout",
    "spool_max_mb": "--spool-max-mb",
    "chunk_linger_ms": "--chunk-linger-ms",
    "notify_unreachable_after": "--notify-unreachable-after",
}
CASES = [(name, text) for name, texts in BAD_VALUES.items() for text in texts]


def toml_number(text: str) -> str:
    """``text`` as a TOML literal (TOML spells the non-finite floats inf and nan)."""
    return {"1e400": "1e400", "-inf": "-inf"}.get(text, text)


def one_sentence(message: str) -> None:
    assert "\n" not in message
    assert message.endswith(".")


def test_every_numeric_setting_has_a_documented_range() -> None:
    numeric = {
        field
        for field, kind in SettingsLayer.__annotations__.items()
        if kind in ("int | None", "float | None")
    }
    assert numeric == set(NUMERIC_RANGES) == set(BAD_VALUES)
    for name, allowed in NUMERIC_RANGES.items():
        assert math.isfinite(allowed.low)
        assert math.isfinite(allowed.high)
        assert allowed.whole == (name in WHOLE)


@pytest.mark.parametrize(("name", "text"), CASES)
def test_a_bad_number_in_the_config_file_is_one_sentence(
    tmp_path: Path, name: str, text: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"{name} = {toml_number(text)}\n")
    with pytest.raises(SettingsError) as refused:
        merge(tmp_path, read_file_layer(config, {}))
    message = str(refused.value)
    one_sentence(message)
    assert name in message
    assert str(config) in message


@pytest.mark.parametrize(("name", "text"), CASES)
def test_a_bad_number_in_the_environment_is_one_sentence(
    tmp_path: Path, name: str, text: str
) -> None:
    variable = f"LOG_MONITOR_{name.upper()}"
    with pytest.raises(SettingsError) as refused:
        merge(tmp_path, read_environment_layer({variable: text}))
    message = str(refused.value)
    one_sentence(message)
    assert variable in message


@pytest.mark.parametrize(("name", "text"), [(n, t) for n, t in CASES if n in FLAGS])
def test_a_bad_number_on_the_command_line_is_one_sentence(
    tmp_path: Path, name: str, text: str
) -> None:
    value: int | float = int(text) if name in WHOLE else float(text)
    with pytest.raises(SettingsError) as refused:
        merge(
            tmp_path, checked_flag_layer(msgspec.structs.replace(SettingsLayer(), **{name: value}))
        )
    message = str(refused.value)
    one_sentence(message)
    assert FLAGS[name] in message


def test_a_number_too_long_for_python_in_the_config_file_is_one_sentence(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("window = " + "9" * 5000 + "\n")
    with pytest.raises(SettingsError) as refused:
        read_file_layer(config, {})
    one_sentence(str(refused.value))


def test_the_ends_of_every_range_are_accepted(tmp_path: Path) -> None:
    for name, allowed in NUMERIC_RANGES.items():
        for end in (allowed.low, allowed.high):
            value = int(end) if allowed.whole else float(end)
            settings = merge(tmp_path, msgspec.structs.replace(SettingsLayer(), **{name: value}))
            assert getattr(settings, name) == value
    # What the main process derives from the largest values still works.
    largest = merge(
        tmp_path,
        SettingsLayer(
            spool_max_mb=NUMERIC_RANGES["spool_max_mb"].high,
            chunk_kib=int(NUMERIC_RANGES["chunk_kib"].high),
        ),
    )
    assert largest.spool_max_bytes == 1024**4
    assert largest.chunk_max_bytes == 8 * 1024**2


def run_cli(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return subprocess.run(
        ["log-monitor", "run", "--headless", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "LOG_MONITOR_CONFIG": str(empty),
            **env,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("layer", "name", "text"),
    [
        ("file", "spool_max_mb", "inf"),
        ("file", "spool_max_mb", "nan"),
        ("file", "window", "99999999999999999999"),
        ("env", "spool_max_mb", "nan"),
        ("env", "ack_timeout", "inf"),
        ("env", "chunk_kib", "0"),
        ("flag", "spool_max_mb", "inf"),
        ("flag", "window", "99999999999999999999"),
        ("flag", "silence_timeout", "nan"),
        ("flag", "chunk_linger_ms", "inf"),
    ],
)
def test_log_monitor_run_refuses_a_bad_number_with_one_sentence_and_exit_2(
    tmp_path: Path, layer: str, name: str, text: str
) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if layer == "file":
        config = tmp_path / "config.toml"
        config.write_text(f"{name} = {toml_number(text)}\n")
        env["LOG_MONITOR_CONFIG"] = str(config)
    elif layer == "env":
        env[f"LOG_MONITOR_{name.upper()}"] = text
    else:
        args = [FLAGS[name], text]
    result = run_cli(tmp_path, args, env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("log-monitor: ")
    assert lines[0].endswith(".")
    assert "must be" in lines[0]
    named = {
        "file": f"{name} in the config file",
        "env": f"LOG_MONITOR_{name.upper()} must be",
        "flag": f"{FLAGS.get(name)} must be",
    }[layer]
    assert named in lines[0]
