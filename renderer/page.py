"""The window's page: one self-contained HTML document built from ``renderer/static``.

Owns: inlining ``app.css`` and ``app.js`` into ``index.html`` and the page's Content
Security Policy. The document is handed to pywebview as a string, so no file URL, local
HTTP server or network is involved, and nothing outside the package is ever loaded.

The policy allows exactly the two inline blocks this module writes (by their SHA-256
hashes), and nothing else: no other script, no inline event handler, no image, no
connection, no form submission. Log text is written with ``textContent`` anyway (the
real defence); the policy is the second wall should a future change slip. ``unsafe-eval``
is allowed because pywebview itself evaluates its bridge code with ``eval`` and
``new Function``; it does not let markup run scripts.

Must not: fetch anything, or depend on pywebview.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

_STATIC = "static"
_PLACEHOLDER = re.compile(r"<!--(?:CSP|STYLE|SCRIPT)-->")


def _read(name: str) -> str:
    return resources.files("renderer").joinpath(_STATIC, name).read_text(encoding="utf-8")


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(script: str, style: str) -> str:
    """The policy for a page whose only inline script and style are these texts."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256_source(script)} 'unsafe-eval'",
            f"style-src {_sha256_source(style)}",
            "img-src 'none'",
            "connect-src 'none'",
            "font-src 'none'",
            "media-src 'none'",
            "object-src 'none'",
            "frame-src 'none'",
            "form-action 'none'",
            "base-uri 'none'",
        ]
    )


@cache
def build_page() -> str:
    """The complete HTML document shown in every window."""
    html = _read("index.html")
    style = "\n" + _read("app.css")
    script = "\n" + _read("app.js")
    if "</script" in script.lower() or "</style" in style.lower():
        raise RuntimeError("app.js and app.css must not contain a closing tag")
    csp = content_security_policy(script, style)
    blocks = {
        "<!--CSP-->": f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        "<!--STYLE-->": f"<style>{style}</style>",
        "<!--SCRIPT-->": f"<script>{script}</script>",
    }
    for placeholder in blocks:
        if html.count(placeholder) != 1:
            raise RuntimeError(f"index.html must contain {placeholder} exactly once")
    # One pass over the template: text inside an inserted block is never re-scanned.
    return _PLACEHOLDER.sub(lambda m: blocks[m.group(0)], html)
