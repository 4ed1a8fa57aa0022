"""The packages' layers, read from the source, and the one atomic file write they share.

* ``main_process`` imports nothing of ``renderer``, and of ``server`` only through
  ``main_process/embedded_server.py`` (which translates the server's errors into the
  client's). Every import statement counts, at any depth: inside functions, under
  ``TYPE_CHECKING``, and names handed to ``importlib``.
* ``bench/`` imports nothing of ``tests/``: what both use (the real server, the main
  process, the protocol client, the one polling wait) is in ``harness/``.
* ``ipc.atomic_file.write_file_atomically`` replaces a file whole, and a write that fails
  leaves the old file as it was, with no temporary beside it.
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipc.atomic_file import write_file_atomically

REPOSITORY = Path(__file__).resolve().parents[2]
# The main process's one door to the reference server.
SERVER_DOOR = Path("main_process") / "embedded_server.py"
# Calls whose first argument names a module to import.
_IMPORTING_CALLS = {"import_module", "__import__", "files", "find_spec"}


def imported_modules(source: str, package: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``source``, at any depth; relative imports are
    resolved against ``package`` (the source's package, as path parts)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            elif node.module is not None:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in _IMPORTING_CALLS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield node.lineno, first.value


def is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def python_files(folder: str) -> list[Path]:
    return sorted((REPOSITORY / folder).rglob("*.py"))


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    package = path.relative_to(REPOSITORY).parent.parts
    return imported_modules(path.read_text(encoding="utf-8"), package)


def test_the_main_process_imports_the_renderer_never_and_the_server_through_one_door() -> None:
    crossings = []
    for path in python_files("main_process"):
        relative = path.relative_to(REPOSITORY)
        for line, module in imports_of(path):
            if is_in(module, "renderer") or (is_in(module, "server") and relative != SERVER_DOOR):
                crossings.append(f"{relative}:{line} imports {module}")
    assert crossings == []


def test_the_check_sees_lazy_and_relative_imports() -> None:
    # The walk above is only as good as what it finds: a function's import, one under
    # TYPE_CHECKING and a name handed to importlib are all imports.
    probe = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from renderer.host import RendererHost\n"
        "def f():\n"
        "    import server.app\n"
        "    from . import windows\n"
        "    return importlib.import_module('renderer.cli')\n"
    )
    found = {module for _, module in imported_modules(probe, ("main_process",))}
    assert {"renderer.host", "server.app", "main_process", "renderer.cli"} <= found


def test_bench_imports_nothing_of_tests() -> None:
    # What both need lives in harness/, which tests and benchmarks may import.
    importing = {
        str(path.relative_to(REPOSITORY))
        for path in python_files("bench")
        if any(is_in(module, "tests") for _, module in imports_of(path))
    }
    assert importing == set()


# ---- the atomic file write ----------------------------------------------------------------


def test_a_write_replaces_the_content_whole_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_file_atomically(path, b"old content, rather longer than the new one", mode=0o600)
    with path.open("rb") as reader_of_the_old_file:
        write_file_atomically(path, b"new", mode=0o644)
        # A reader of the old file sees all of it: the new content is another file.
        assert reader_of_the_old_file.read() == b"old content, rather longer than the new one"
    assert path.read_bytes() == b"new"
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failing_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "tokens.json"
    write_file_atomically(path, b"the old file")

    def refuse(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, refuse)
    with pytest.raises(OSError, match="No space left on device"):
        write_file_atomically(path, b"the new file, never seen")
    monkeypatch.undo()
    assert path.read_bytes() == b"the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]
