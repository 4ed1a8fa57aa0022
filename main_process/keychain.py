"""Tokens in the operating system's keychain, when it has one the client can use.

Owns: ``KeychainTokenStore`` (the same ``load``/``save`` as ``identity.TokenStore``, on
one keychain item: service ``log-monitor``, account the data dir's path, the tokens as
JSON), the marker that ``tokens.json`` holds instead of tokens while they are in the
keychain, and ``open_token_store``: which store to use, and moving the tokens from one to
the other so that the session survives the move.

Keychains, through ``keyring``: the Secret Service on Linux (GNOME Keyring, KWallet 5.97+,
KeePassXC), the macOS Keychain, the Windows Credential Manager. A keychain is usable when
the backend ``keyring`` would choose is a real one (not its fail or null backend) and
answers a read; a locked or absent one is not. The choice is keyring's own rule, made
among the backends that can work on this platform (``platform_backends``) unless the user
named one (``PYTHON_KEYRING_BACKEND`` or ``keyringrc.cfg``, a plugin's backend too).

The ``token_store`` setting: ``auto`` (the default) uses the keychain when it is usable
and the file otherwise; ``keychain`` requires the keychain; ``file`` keeps the 0600 file.

Moving keeps the session and is safe at any instant:

- file → keychain: the tokens are written to the keychain and read back, and only then is
  the file replaced by the marker (atomically). A crash in between leaves the tokens in
  both places; the next start moves them again.
- keychain → file: the tokens are written to the file, then the keychain item is deleted.
  A crash in between leaves a stale item that the next move to the keychain overwrites.

The rule that a rotated refresh token is stored before it is used holds in the keychain
too: ``save`` returns only after the keychain accepted the item (or raises, and the
connection presents nothing new until a save succeeds). When the tokens are in the
keychain and the keychain cannot be reached (locked, its daemon not started yet),
``load`` raises ``KeychainUnavailable``: nothing is presented in their place, the main
process waits and says so, since starting over as a guest would give the installation
away.

Must not: log or put in an exception message any token value.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from ipc.atomic_file import write_file_atomically
from main_process.credentials import (
    IdentityError,
    Tokens,
    TokenStore,
    parse_tokens,
    token_document,
)
from main_process.settings import TokenStorePreference

logger = logging.getLogger(__name__)

SERVICE = "log-monitor"
MARKER_STORE = "keychain"


class KeychainUnavailable(IdentityError):
    """The keychain cannot be used now; the message is one sentence, with no token."""


class Keychain(Protocol):
    """The part of ``keyring``'s backend API used here."""

    def get_password(self, service: str, username: str) -> str | None: ...
    def set_password(self, service: str, username: str, password: str) -> None: ...
    def delete_password(self, service: str, username: str) -> None: ...


@dataclass(frozen=True, slots=True)
class OpenedStore:
    """The store in use and how status names it."""

    store: AnyTokenStore
    description: str


def platform_backends(platform: str = sys.platform) -> tuple[str, ...]:
    """The modules of ``keyring``'s own backends that can work on ``platform``."""
    if platform == "darwin":
        return ("keyring.backends.macOS",)
    if platform == "win32":
        return ("keyring.backends.Windows",)
    # Linux and the BSDs: the keychains on the D-Bus session bus.
    return (
        "keyring.backends.SecretService",
        "keyring.backends.libsecret",
        "keyring.backends.kwallet",
    )


def system_keychain() -> tuple[Keychain, str] | None:
    """``keyring``'s backend and its name, when it is a real keychain; else None."""
    try:
        import keyring.backends.fail
        import keyring.backends.null
    except ImportError:  # pragma: no cover - keyring is a dependency
        return None
    try:
        backend: Any = keyring_choice(platform_backends())
    except Exception as exc:  # a broken keyring plugin must not stop the client
        logger.warning("no keychain: keyring failed to choose one (%s)", type(exc).__name__)
        return None
    if backend is None or isinstance(
        backend, keyring.backends.fail.Keyring | keyring.backends.null.Keyring
    ):
        return None
    priority = getattr(backend, "priority", 0)
    if not isinstance(priority, int | float) or priority <= 0:
        return None
    name = getattr(backend, "name", type(backend).__name__)
    return backend, str(name)


def keyring_choice(backend_modules: tuple[str, ...]) -> Any:
    """The backend ``keyring`` itself would choose, looked for among ``backend_modules``
    (``platform_backends()``: the platform's own); None when none is usable.

    As ``keyring.core.init_backend`` does: the backend the user named
    (``PYTHON_KEYRING_BACKEND``, else ``keyringrc.cfg``; any backend, a plugin's too);
    else, of the viable backends, keyring's chainer when more than one has a positive
    priority (it asks each in turn), else the one of highest priority. Unlike keyring,
    only ``backend_modules`` are imported and asked unless the chainer is chosen:
    keyring imports every backend it ships and every plugin the installed packages
    declare, and on Linux its macOS backend alone costs ~40 ms (ctypes looks for the
    macOS frameworks with a subprocess) at every start.

    Asked anew at every call: a keychain whose daemon was not up yet (a login in
    progress) must be found once it is.
    """
    import keyring.backend
    import keyring.core

    named = keyring.core.load_env() or keyring.core.load_config()
    if named is not None:
        return named
    for module in backend_modules:
        # As keyring's own loading of its backends: one that cannot be imported here
        # (a missing optional dependency) is not there.
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    usable: list[tuple[float, Any]] = []
    for cls in keyring.backend.KeyringBackend.get_viable_backends():
        if cls.__module__ not in backend_modules:
            continue
        # As keyring: a backend that cannot be made without arguments is left out.
        with contextlib.suppress(TypeError):
            ring = cls()
            # Asked once: a D-Bus keychain's priority is a round trip to its daemon.
            priority = ring.priority
            if priority > 0:
                usable.append((priority, ring))
    if len(usable) > 1:
        import keyring.backends.chainer

        # The chainer finds its backends through keyring's own discovery, cached until
        # reset (jaraco's ``once``): reset, so that it sees the keychains up now.
        reset = getattr(keyring.backend.get_all_keyring, "reset", None)
        if callable(reset):
            with contextlib.suppress(KeyError):  # nothing cached yet
                reset()
        chainer: Any = keyring.backends.chainer.ChainerBackend
        return chainer()
    return max(usable, key=lambda ranked: ranked[0], default=(0, None))[1]


class KeychainTokenStore:
    """``load``/``save`` of ``Tokens`` in one keychain item (see the module docstring)."""

    def __init__(self, keychain: Keychain, account: str, name: str, marker: Path) -> None:
        self._keychain = keychain
        self._account = account
        self.name = name
        self._marker = marker

    @property
    def path(self) -> Path:
        """Where the marker is (for messages: the tokens themselves are in the keychain)."""
        return self._marker

    def load(self) -> Tokens:
        try:
            secret = self._keychain.get_password(SERVICE, self._account)
        except Exception as exc:
            raise self._unavailable("read", exc) from None
        if secret is None:
            return Tokens()
        tokens = parse_tokens(secret.encode("utf-8"))
        if tokens is None:
            logger.warning(
                "the tokens in the keychain (%s) are damaged; continuing as a new guest", self.name
            )
            return Tokens()
        return tokens

    def save(self, tokens: Tokens) -> None:
        text = json.dumps(token_document(tokens))
        try:
            self._keychain.set_password(SERVICE, self._account, text)
        except Exception as exc:
            raise self._unavailable("write", exc) from None

    def delete(self) -> None:
        try:
            self._keychain.delete_password(SERVICE, self._account)
        except Exception as exc:  # keyring raises PasswordDeleteError when there is none
            logger.info("no keychain item to delete (%s)", type(exc).__name__)

    def _unavailable(self, verb: str, exc: Exception) -> KeychainUnavailable:
        # The exception's own text may quote the request (never a token: the account is a
        # path), but keep to its type and first line to stay one sentence.
        detail = str(exc).splitlines()[0].rstrip(". ") if str(exc) else type(exc).__name__
        why = f"the keychain ({self.name}) cannot {verb} the tokens: {detail}"
        return KeychainUnavailable(f"{why[0].upper()}{why[1:]}.", reason=why)


AnyTokenStore: TypeAlias = "TokenStore | KeychainTokenStore"


def _marker(account: str) -> bytes:
    return (json.dumps({"version": 1, "store": MARKER_STORE, "account": account}) + "\n").encode()


def marker_account(path: Path) -> str | None:
    """The keychain account named by the marker in ``path``, or None when the file holds
    tokens (or nothing)."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if isinstance(document, dict) and document.get("store") == MARKER_STORE:
        account = document.get("account")
        return account if isinstance(account, str) else None
    return None


def open_token_store(
    tokens_file: Path,
    data_dir: Path,
    preference: TokenStorePreference,
    keychain: Callable[[], tuple[Keychain, str] | None] = system_keychain,
) -> OpenedStore:
    """The store to use, after moving the tokens to it when they were in the other one.

    Raises ``KeychainUnavailable`` when the tokens are in the keychain and it cannot be
    reached (whatever the preference: they cannot be moved out of it either), or when
    ``keychain`` is required and there is none.
    """
    file_store = TokenStore(tokens_file)
    account = str(data_dir.absolute())
    held_in_keychain = marker_account(tokens_file)
    found = keychain() if preference != "file" or held_in_keychain else None
    if found is not None:
        backend, name = found
        keychain_store: KeychainTokenStore | None = KeychainTokenStore(
            backend, held_in_keychain or account, name, tokens_file
        )
    else:
        keychain_store = None

    if held_in_keychain is not None:
        if keychain_store is None:
            raise KeychainUnavailable(
                "The tokens are kept in the keychain, and no keychain can be reached.",
                reason="the tokens are in the keychain, which cannot be reached",
            )
        tokens = keychain_store.load()  # raises when it cannot be reached
        if preference != "file":
            return OpenedStore(keychain_store, f"keychain ({keychain_store.name})")
        file_store.save(tokens)
        keychain_store.delete()
        logger.info("moved the tokens from the keychain to %s", tokens_file)
        return OpenedStore(file_store, "file")

    if preference == "file":
        return OpenedStore(file_store, "file")
    usable = keychain_store is not None and _answers(keychain_store)
    if not usable or keychain_store is None:
        if preference == "keychain":
            raise KeychainUnavailable(
                "The token_store setting asks for the keychain, and none can be used here.",
                reason="no usable keychain",
            )
        return OpenedStore(file_store, "file")
    tokens = file_store.load()
    keychain_store.save(tokens)
    if keychain_store.load() != tokens:
        raise KeychainUnavailable(
            f"The keychain ({keychain_store.name}) did not keep the tokens it was given.",
            reason="the keychain did not keep the tokens",
        )
    write_file_atomically(tokens_file, _marker(account))
    if tokens != Tokens():
        logger.info(
            "moved the tokens from %s to the keychain (%s)", tokens_file, keychain_store.name
        )
    return OpenedStore(keychain_store, f"keychain ({keychain_store.name})")


def _answers(store: KeychainTokenStore) -> bool:
    try:
        store.load()
    except KeychainUnavailable as exc:
        logger.info("%s; keeping the tokens in the file", exc)
        return False
    return True
