"""The window's page: ``renderer/static`` shipped in the package, and what it may load.

Owns: where the page is (``page_url()``, a ``file:`` URL of ``static/index.html``), its
Content Security Policy, and ``is_page_resource``, the test the renderer host's request
interceptor applies to every URL a page asks for.

Two walls, so no page can load anything but the package's own files:

* the policy, in ``index.html``'s ``<meta http-equiv>`` (``CONTENT_SECURITY_POLICY`` must
  equal it; a test checks): ``default-src 'self'``, scripts and styles only from files
  (no inline script, no inline style, no event-handler attribute), no connection, no
  form submission, no remote origin at all. ``'unsafe-eval'`` stays because pywebview's
  ``js_api`` builds its stubs with ``new Function`` and its ``evaluate_js`` uses ``eval``;
  it does not let markup run scripts. Log text is written with ``textContent`` anyway (the
  real defence); the policy is the second wall should a future change slip.
* a ``file:`` page's ``'self'`` covers every ``file:`` URL, so the host also refuses any
  request that is not one of the files in ``static/`` (``is_page_resource``).

No local HTTP server and no network are involved.

Must not: fetch anything, or depend on pywebview or Qt.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-eval'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'none'",
        "font-src 'none'",
        "media-src 'none'",
        "object-src 'none'",
        "frame-src 'none'",
        "worker-src 'none'",
        "form-action 'none'",
        "base-uri 'none'",
    ]
)
PAGE_FILE = "index.html"
# Schemes of Qt's own resources and blank pages: nothing from outside comes through them.
_INTERNAL_SCHEMES = frozenset({"qrc", "about"})


@cache
def static_dir() -> Path:
    """The directory of the page's files (a real directory: the package is installed as
    files, which is what a ``file:`` URL needs)."""
    return Path(str(resources.files("renderer").joinpath("static"))).resolve()


def page_path() -> Path:
    return static_dir() / PAGE_FILE


def page_url() -> str:
    return page_path().as_uri()


def read_static(name: str) -> str:
    return (static_dir() / name).read_text(encoding="utf-8")


@cache
def _page_files() -> frozenset[Path]:
    return frozenset(path for path in static_dir().iterdir() if path.is_file())


def is_page_resource(url: str) -> bool:
    """Whether a page may load ``url``: one of the package's static files, or Qt's own."""
    parts = urlsplit(url)
    if parts.scheme in _INTERNAL_SCHEMES:
        return True
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return False
    try:
        path = Path(unquote(parts.path)).resolve()
    except (OSError, ValueError):
        return False
    return path in _page_files()
