"""The web page at ``/``: three static files shipped in the package, no CDN, no external asset.

Hospitals are often offline, and a page that pulls scripts from elsewhere is one a clinical-IT
reviewer refuses. So the page is plain HTML, CSS and JavaScript from ``serving/static`` (read once
at start-up), served with explicit content types and a strict Content-Security-Policy: scripts,
styles and requests only from this server; images also from ``data:`` / ``blob:`` URLs (the API
returns PNGs as base64). The page calls the same ``/v1`` API as any client, with the API key the
user types (kept in the tab's sessionStorage only).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from pneumocxr.serving.errors import body

CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def static_files() -> dict[str, bytes]:
    """The page's files as shipped in the package."""
    folder = resources.files("pneumocxr.serving") / "static"
    return {name: (folder / name).read_bytes() for name in CONTENT_TYPES}


def register(app: FastAPI) -> None:
    """Add ``GET /`` and ``GET /static/{name}`` to ``app``."""
    files = static_files()

    def serve(name: str) -> Response:
        return Response(files[name], media_type=CONTENT_TYPES[name], headers=HEADERS)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return serve("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in files or name == "index.html":
            return JSONResponse(body("not_found", f"no static file {name!r}", None), 404)
        return serve(name)
