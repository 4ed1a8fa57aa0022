"""What the main process imports on its way to the first connection, and what it leaves out.

* python-socketio is imported for the client without ``redis`` (its Redis managers are
  for servers), and ``redis`` can still be imported afterwards.
* The keychain is chosen as ``keyring`` would choose it, but only the platform's own
  backends are imported and asked, unless the user named a backend
  (``PYTHON_KEYRING_BACKEND`` or ``keyringrc.cfg``, a plugin's too); when more than one
  is usable, keyring's chainer, as keyring itself would.

Each check runs in a fresh interpreter: what it looks at is ``sys.modules`` after a start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from main_process.keychain import platform_backends
from main_process.start_imports import modules_held_out

REPOSITORY = Path(__file__).resolve().parents[2]

# An in-memory keyring backend, as a plugin package would ship one.
MEMORY_BACKEND = """
from keyring.backend import KeyringBackend


class {name}(KeyringBackend):
    priority = {priority}

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {{}}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[service, username] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.items[service, username]
"""


def keyring_environment(home: Path, plugins: Path | None = None) -> dict[str, str]:
    """No backend named, no user configuration, no D-Bus session: keyring's own choice."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHON_KEYRING_BACKEND", "DBUS_SESSION_BUS_ADDRESS")
    }
    home.mkdir(parents=True, exist_ok=True)
    environment.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        LOCALAPPDATA=str(home / "local"),
    )
    if plugins is not None:
        environment["PYTHONPATH"] = str(plugins)
    return environment


def run_python(code: str, environment: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a new interpreter and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def write_backend(folder: Path, module: str, name: str, priority: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(MEMORY_BACKEND.format(name=name, priority=priority))


# ----------------------------------------------------------------------------- socketio


def test_the_client_imports_socketio_and_the_main_process_without_redis() -> None:
    imported = run_python(
        """
        import json, sys
        from main_process.start_imports import import_client_socketio
        import_client_socketio()
        import main_process.app
        before = "redis" in sys.modules
        import socketio
        manager = socketio.AsyncRedisManager  # the name is still there, unusable here
        import redis  # and redis itself still imports
        print(json.dumps([before, redis.__name__]))
        """
    )
    assert imported == [False, "redis"]


def test_a_module_held_out_cannot_be_imported_until_the_block_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    with modules_held_out(("colorsys",)), pytest.raises(ImportError):
        import colorsys
    assert "colorsys" not in sys.modules
    import colorsys

    assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0)[0] == 0.0


def test_a_module_already_imported_is_not_held_out() -> None:
    with modules_held_out(("json",)):
        import json as held

        assert held.loads("[1]") == [1]
    assert sys.modules["json"] is held


# ----------------------------------------------------------------------------- keychain


def test_the_keychain_is_looked_for_among_the_platform_backends_only(tmp_path: Path) -> None:
    imported = run_python(
        """
        import json, sys
        from main_process.keychain import system_keychain
        system_keychain()
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("keyring.backends."))))
        """,
        keyring_environment(tmp_path / "home"),
    )
    own = platform_backends()
    # Only the platform's backends (and their parts), besides keyring's fail and null.
    foreign = [
        module
        for module in imported
        if module not in ("keyring.backends.fail", "keyring.backends.null")
        and not any(module == name or module.startswith(name + ".") for name in own)
    ]
    assert foreign == []
    assert set(own) <= set(imported)  # and those were asked


def test_a_backend_named_in_the_environment_is_used_even_a_plugin(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_backend(plugins, "memory_keyring", "MemoryKeyring", 1)
    environment = keyring_environment(tmp_path / "home", plugins)
    environment["PYTHON_KEYRING_BACKEND"] = "memory_keyring.MemoryKeyring"
    chosen = run_python(
        """
        import json
        from main_process.keychain import system_keychain
        backend, name = system_keychain()
        print(json.dumps([type(backend).__name__, name]))
        """,
        environment,
    )
    assert chosen[0] == "MemoryKeyring"


def test_a_backend_named_in_keyringrc_is_used(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_backend(plugins, "configured_keyring", "ConfiguredKeyring", 1)
    environment = keyring_environment(tmp_path / "home")
    config_root = Path(
        run_python(
            """
            import json
            from keyring.util import platform_
            print(json.dumps(str(platform_.config_root())))
            """,
            environment,
        )
    )
    config_root.mkdir(parents=True)
    # keyring-path: where keyring finds the plugin (not on PYTHONPATH here).
    (config_root / "keyringrc.cfg").write_text(
        f"[backend]\ndefault-keyring=configured_keyring.ConfiguredKeyring\nkeyring-path={plugins}\n"
    )
    chosen = run_python(
        """
        import json
        from main_process.keychain import system_keychain
        backend, name = system_keychain()
        print(json.dumps(type(backend).__name__))
        """,
        environment,
    )
    assert chosen == "ConfiguredKeyring"


def test_of_several_usable_backends_keyring_chains_them_and_of_one_takes_it(
    tmp_path: Path,
) -> None:
    plugins = tmp_path / "plugins"
    write_backend(plugins, "first_keyring", "FirstKeyring", 2)
    write_backend(plugins, "second_keyring", "SecondKeyring", 1)
    chosen = run_python(
        """
        import json
        from main_process.keychain import keyring_choice
        both = keyring_choice(("first_keyring", "second_keyring"))
        print(json.dumps([
            type(both).__name__,
            [type(ring).__name__ for ring in both.backends],
            type(keyring_choice(("second_keyring",))).__name__,
            keyring_choice(()) is None,
        ]))
        """,
        keyring_environment(tmp_path / "home", plugins),
    )
    assert chosen == [
        "ChainerBackend",
        ["FirstKeyring", "SecondKeyring"],  # highest priority first, as keyring orders
        "SecondKeyring",
        True,
    ]
