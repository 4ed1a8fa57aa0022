"""``log-monitor run``, the real process, on its way to the first connection: what it
imports (Python's own ``-X importtime`` report, written to its log) and what it leaves
out, with the server remote and with the embedded one.

* Shipping to a remote server: python-socketio and aiohttp are imported, ``redis`` is not
  (the client never uses python-socketio's Redis managers), and no ``keyring`` backend
  of another platform is (no keychain answers here: the tokens stay in the file).
* With the embedded server in the same process (which python-socketio, imported without
  ``redis``, serves too): a line appended to the followed file is acknowledged.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.main_process_runner import MainProcessRunner, headless_environment
from harness.server_process import ServerProcess
from main_process.keychain import platform_backends

REPORT_PREFIX = "import time:"


def imported_modules(log_text: str) -> set[str]:
    """The modules named in an ``-X importtime`` report (one line per import statement
    that was not answered from ``sys.modules``)."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in log_text.splitlines()
        if line.startswith(REPORT_PREFIX) and line.count("|") == 2
    } - {"imported package"}


def keyring_of_its_own(home: Path) -> dict[str, str]:
    """No keyring backend named, no keyring configuration, no D-Bus session bus."""
    environment = headless_environment()
    for name in ("PYTHON_KEYRING_BACKEND", "DBUS_SESSION_BUS_ADDRESS"):
        environment.pop(name, None)
    home.mkdir(parents=True)
    environment.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        LOCALAPPDATA=str(home / "local"),
    )
    return environment


def test_run_connects_without_redis_and_asks_only_the_platform_keychains(
    tmp_path: Path, server: ServerProcess, runners: list[MainProcessRunner]
) -> None:
    followed = tmp_path / "app.log"
    followed.write_text("the first line\n")
    main = MainProcessRunner(tmp_path / "data", "--server", server.url, str(followed))
    runners.append(main)
    main.environment = dict(keyring_of_its_own(tmp_path / "home"), PYTHONPROFILEIMPORTTIME="1")
    main.start()
    status = main.wait_for_status(
        lambda s: s["state"] == "connected" and s["sentChunks"] >= 1 and s["bufferedChunks"] == 0,
        30,
        "the first line to be acknowledged",
    )
    assert status["credentialStore"] == "file"
    assert main.stop() == 0

    modules = imported_modules(main.log_text())
    assert {"socketio.async_client", "aiohttp", "keyring"} <= modules  # the report was read
    # The report lists attempts too: python-socketio's ``import redis``, refused at once,
    # is a line of its own; an import of redis would bring dozens of its modules.
    assert sorted(m for m in modules if m.startswith("redis.")) == []
    # keyring's backends for other platforms: the macOS one alone was ~40 ms here. (Which
    # ones were asked is seen in ``sys.modules``: tests/unit/test_start_imports.py.)
    own = platform_backends()
    foreign = sorted(
        module
        for module in modules
        if module.startswith("keyring.backends.")
        and module not in ("keyring.backends.fail", "keyring.backends.null")
        and not any(module == name or module.startswith(name + ".") for name in own)
    )
    assert foreign == []


def test_run_with_the_embedded_server_ships_a_line(
    tmp_path: Path, runners: list[MainProcessRunner]
) -> None:
    followed = tmp_path / "app.log"
    followed.write_text("")
    main = MainProcessRunner(tmp_path / "data", str(followed))
    runners.append(main)
    main.start()
    main.wait_for_status(lambda s: s["state"] == "connected", 30, "the embedded server's welcome")
    with followed.open("a") as log:
        log.write("one line for the embedded server\n")
    status = main.wait_for_status(
        lambda s: s["sentChunks"] >= 1 and s["bufferedChunks"] == 0,
        30,
        "the line to be acknowledged",
    )
    assert status["server"].startswith("http://127.0.0.1:")
    assert main.stop() == 0
    assert (tmp_path / "data" / "server").is_dir()
    assert os.listdir(tmp_path / "data" / "server")
