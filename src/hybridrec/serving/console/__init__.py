"""The web console: static HTML, JavaScript and CSS in ``static/``, served at ``/`` by the
API itself (no build step, no CDN, no template).

The page builds everything it shows from the documented API (``/openapi.json``) with DOM
calls (``textContent``, never ``innerHTML`` with data), so ids and feature names of any
characters are shown as text. The Content-Security-Policy allows scripts and styles from
this server only: no inline script or style, no other origin. The API token, when the
console asks for one, stays in the tab's ``sessionStorage`` and goes out only in the
``Authorization`` header.
"""

from __future__ import annotations

from importlib import resources

from flask import Flask, Response

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "install_console"]

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""Files under ``/console/`` and their content types."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath("static", name).read_bytes()


def install_console(app: Flask) -> None:
    """Serve the console at ``/`` and its files at ``/console/NAME`` (read once here)."""
    from ..app import _params
    from ..validation import ApiError, ConsoleAssetParams

    page = _read("index.html")
    files = {name: _read(name) for name in ASSETS}

    @app.get("/")
    def console():
        return Response(page, mimetype="text/html", headers=_HEADERS)

    @app.get("/console/<name>")
    def console_asset(name: str):
        name = _params(ConsoleAssetParams, name=name).name
        if name not in files:
            raise ApiError(404, "not_found", f"no console file {name[:64]!r}; the console is at /")
        return Response(files[name], content_type=ASSETS[name], headers=_HEADERS)
