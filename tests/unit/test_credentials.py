"""Client id, tokens on disk, and the data directory: modes, atomicity, damaged files."""

from __future__ import annotations

import json
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipc.atomic_file import write_file_atomically
from main_process.credentials import (
    TOKEN_RESERVE_BYTES,
    ClientIdFile,
    IdentityError,
    Tokens,
    TokenStore,
    load_or_create_client_id,
)
from main_process.paths import (
    DATA_DIR_ENV,
    DataPaths,
    default_data_dir,
    ensure_private_dir,
    resolve_data_dir,
    set_aside,
)

SECRET_ACCESS = "eyJhbGciOiJIUzI1NiJ9.access-SECRET-1"
SECRET_REFRESH = "refresh-SECRET-2"
SECRET_GUEST = "guest-SECRET-3"
USER_TOKENS = Tokens(
    access_token=SECRET_ACCESS,
    refresh_token=SECRET_REFRESH,
    guest_token=SECRET_GUEST,
    user_id="17",
    username="alice",
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_no_secret_in(text: str) -> None:
    for secret in (SECRET_ACCESS, SECRET_REFRESH, SECRET_GUEST, "SECRET"):
        assert secret not in text


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask, so only the code under test can make a file private."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# ---------------------------------------------------------------------------- client id


def test_the_client_id_is_a_uuid4_created_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    first = load_or_create_client_id(data_dir)
    assert uuid.UUID(first).version == 4
    assert str(uuid.UUID(first)) == first
    assert load_or_create_client_id(data_dir) == first
    assert (data_dir / "client-id").read_text().strip() == first
    assert mode_of(data_dir) == 0o700
    assert load_or_create_client_id(tmp_path / "other") != first


def test_a_client_id_written_in_another_style_is_kept(tmp_path: Path) -> None:
    existing = uuid.uuid4()
    (tmp_path / "client-id").write_text(f"  {str(existing).upper()}\r\n")
    assert load_or_create_client_id(tmp_path) == str(existing)


@pytest.mark.parametrize("content", [b"", b"not-a-uuid\n", b"\xff\xfe\x00junk", b"1234"])
def test_a_corrupt_client_id_is_replaced_and_kept_aside(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "client-id").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="main_process.credentials"):
        fresh = load_or_create_client_id(tmp_path)
    assert uuid.UUID(fresh).version == 4
    assert load_or_create_client_id(tmp_path) == fresh
    [kept] = tmp_path.glob("client-id.corrupt-*")
    assert kept.read_bytes() == content
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "\n" not in warnings[0].getMessage()


def test_an_unreadable_client_id_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "client-id").mkdir()
    with pytest.raises(IdentityError) as raised:
        load_or_create_client_id(tmp_path)
    message = str(raised.value)
    assert message.startswith("Cannot read the client id file")
    assert message.endswith(".")
    assert "\n" not in message


def test_a_client_id_held_by_others_on_the_server_is_kept_aside_for_a_new_one(
    tmp_path: Path,
) -> None:
    ids = ClientIdFile(tmp_path)
    taken = ids.load_or_create()
    fresh = ids.renew(taken)
    assert uuid.UUID(fresh).version == 4
    assert fresh != taken
    assert load_or_create_client_id(tmp_path) == fresh
    [kept] = tmp_path.glob("client-id.taken-*")
    assert kept.read_text().strip() == taken
    # Each renewal keeps the one before; nothing is overwritten.
    third = ids.renew(fresh)
    assert sorted(p.read_text().strip() for p in tmp_path.glob("client-id.taken-*")) == sorted(
        [taken, fresh]
    )
    assert load_or_create_client_id(tmp_path) == third


def test_a_new_client_id_that_cannot_be_stored_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(IdentityError) as raised:
        ClientIdFile(not_a_dir).renew("old")
    assert str(raised.value).endswith(".")
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------------ Tokens


def test_tokens_repr_and_str_never_show_token_values() -> None:
    for text in (repr(USER_TOKENS), str(USER_TOKENS), f"{USER_TOKENS}", f"{[USER_TOKENS]}"):
        assert_no_secret_in(text)
        assert "<set>" in text
        assert "alice" in text
    assert "access_token=None" in repr(Tokens())


def test_tokens_choose_the_handshake_token() -> None:
    assert Tokens().handshake_token is None
    assert Tokens(guest_token="g").handshake_token == "g"
    assert Tokens(access_token="a", guest_token="g").handshake_token == "a"
    assert Tokens(refresh_token="r").signed_in is True
    assert Tokens(guest_token="g").signed_in is False


def test_tokens_are_immutable() -> None:
    with pytest.raises(AttributeError):
        USER_TOKENS.access_token = "changed"  # type: ignore[misc]


# -------------------------------------------------------------------------- TokenStore


def test_tokens_round_trip_through_a_private_file(tmp_path: Path, umask_zero: None) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(USER_TOKENS)
    assert mode_of(store.path) == 0o600
    assert TokenStore(store.path).load() == USER_TOKENS
    document = json.loads(store.path.read_text())
    assert document["refresh_token"] == SECRET_REFRESH


def test_a_missing_token_file_is_a_fresh_guest(tmp_path: Path) -> None:
    assert TokenStore(tmp_path / "tokens.json").load() == Tokens()


def test_saving_replaces_the_file_atomically(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(Tokens(guest_token="old-guest"))
    old_inode = store.path.stat().st_ino
    with store.path.open("rb") as reader_of_old_file:
        store.save(USER_TOKENS)
        # A reader that had the old file sees all of the old content, never a mix.
        assert json.loads(reader_of_old_file.read())["guest_token"] == "old-guest"
    assert store.path.stat().st_ino != old_inode
    assert store.load() == USER_TOKENS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json", "tokens.json.reserve"]


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(Tokens(guest_token="kept"))

    def refuse(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(IdentityError) as raised:
        store.save(USER_TOKENS)
    monkeypatch.undo()
    message = str(raised.value)
    assert message.startswith("Cannot write the token file")
    assert "No space left on device" in message
    assert_no_secret_in(message)
    # The short form a status line shows: the OS's words and the file, no token.
    assert raised.value.reason == f"No space left on device ({store.path})"
    # The reserve was given up for a second try, which failed too; nothing else is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json"]
    assert store.load() == Tokens(guest_token="kept")


def test_a_full_disk_takes_one_more_save_through_the_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    assert store.load() == Tokens()
    reserve = tmp_path / "tokens.json.reserve"
    assert reserve.stat().st_size == TOKEN_RESERVE_BYTES
    real_write = os.write
    refusals: list[int] = []

    def full_until_the_reserve_is_gone(fd: int, data: bytes | memoryview) -> int:
        if reserve.exists():
            refusals.append(fd)
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_until_the_reserve_is_gone)
    with caplog.at_level(logging.WARNING, logger="main_process.credentials"):
        store.save(USER_TOKENS)
    monkeypatch.undo()
    assert len(refusals) == 1
    assert TokenStore(store.path).load() == USER_TOKENS
    assert "reserve" in caplog.text
    assert_no_secret_in(caplog.text)
    # Set aside again (here the disk had room for it again).
    assert reserve.stat().st_size == TOKEN_RESERVE_BYTES


def test_the_temporary_file_is_private_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_zero: None
) -> None:
    seen_modes: list[int] = []
    real_write = os.write

    def spy_write(fd: int, data: bytes | memoryview) -> int:
        seen_modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy_write)
    write_file_atomically(tmp_path / "secret", b"s3cr3t", mode=0o600)
    monkeypatch.undo()
    assert seen_modes
    assert all(mode == 0o600 for mode in seen_modes)
    assert (tmp_path / "secret").read_bytes() == b"s3cr3t"


def test_a_token_file_open_to_others_is_tightened_on_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(USER_TOKENS)
    store.path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="main_process.credentials"):
        assert store.load() == USER_TOKENS
    assert mode_of(store.path) == 0o600
    assert "readable by others" in caplog.text
    assert_no_secret_in(caplog.text)


@pytest.mark.parametrize(
    "content",
    [
        b'{"access_token": "eyJhbGciOiJIUzI1NiJ9.access-SECRET-1", "refr',
        b"\x00\xff binary",
        b"[1, 2, 3]",
        b'{"access_token": 5}',
        b'{"guest_token": ["guest-SECRET-3"]}',
        b"",
    ],
)
def test_a_corrupt_token_file_means_a_fresh_guest_with_one_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with caplog.at_level(logging.DEBUG, logger="main_process.credentials"):
        assert TokenStore(path).load() == Tokens()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "\n" not in warnings[0].getMessage()
    assert_no_secret_in(caplog.text)
    [kept] = tmp_path.glob("tokens.json.corrupt-*")
    assert kept.read_bytes() == content
    assert mode_of(kept) == 0o600
    # The next save starts a clean file.
    TokenStore(path).save(Tokens(guest_token="new"))
    assert TokenStore(path).load() == Tokens(guest_token="new")


def test_an_unreadable_token_file_means_a_fresh_guest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    path.mkdir()  # readable by no one as a file, root included
    with caplog.at_level(logging.WARNING, logger="main_process.credentials"):
        assert TokenStore(path).load() == Tokens()
    assert "unreadable" in caplog.text


def test_a_numeric_user_id_from_the_server_is_kept_as_text(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"version": 1, "access_token": "a", "user_id": 42}))
    assert TokenStore(path).load() == Tokens(access_token="a", user_id="42")


def test_saving_and_loading_logs_no_token_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        store = TokenStore(tmp_path / "d" / "tokens.json")
        store.save(USER_TOKENS)
        store.path.chmod(0o666)
        store.load()
        load_or_create_client_id(tmp_path / "d")
    assert caplog.records, "the permission fix must have logged something"
    assert_no_secret_in(caplog.text)


# ------------------------------------------------------------------------------- paths


def test_the_data_dir_comes_from_the_flag_then_the_environment_then_platformdirs(
    tmp_path: Path,
) -> None:
    environ = {DATA_DIR_ENV: str(tmp_path / "from-env")}
    assert resolve_data_dir(tmp_path / "flag", environ) == tmp_path / "flag"
    assert resolve_data_dir(None, environ) == tmp_path / "from-env"
    assert resolve_data_dir("", environ) == tmp_path / "from-env"
    assert resolve_data_dir(None, {DATA_DIR_ENV: ""}) == default_data_dir().absolute()
    assert resolve_data_dir(None, {}) == default_data_dir().absolute()
    assert default_data_dir().name == "log-monitor"


def test_a_relative_or_home_data_dir_becomes_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert resolve_data_dir("~/lm", {}) == Path("/home/someone/lm")
    assert resolve_data_dir("rel/dir", {}) == Path.cwd() / "rel" / "dir"


def test_data_paths_name_every_file(tmp_path: Path) -> None:
    paths = DataPaths.resolve(tmp_path, {})
    assert paths.spool == tmp_path / "spool.sqlite3"
    assert paths.client_id == tmp_path / "client-id"
    assert paths.tokens == tmp_path / "tokens.json"
    assert paths.server_data == tmp_path / "server"


def test_a_new_data_dir_is_private_and_an_existing_one_is_left_alone(
    tmp_path: Path, umask_zero: None
) -> None:
    created = ensure_private_dir(tmp_path / "new")
    assert mode_of(created) == 0o700
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    ensure_private_dir(existing)
    assert mode_of(existing) == 0o755


def test_set_aside_never_overwrites_an_earlier_bad_file(tmp_path: Path) -> None:
    target = tmp_path / "spool.sqlite3"
    kept: list[Path] = []
    for content in (b"one", b"two", b"three"):
        target.write_bytes(content)
        kept.append(set_aside(target))
    assert len(set(kept)) == 3
    assert [p.read_bytes() for p in kept] == [b"one", b"two", b"three"]
    assert not target.exists()


def test_a_token_file_that_cannot_be_made_private_is_still_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(USER_TOKENS)
    store.path.chmod(0o640)

    def refuse(fd: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    with caplog.at_level(logging.WARNING, logger="main_process.credentials"):
        assert store.load() == USER_TOKENS
    assert "cannot be made private" in caplog.text
    assert_no_secret_in(caplog.text)
