"""The fleet dashboard: a static page the controller serves at ``/ui``.

Three files shipped in the package (``_www/``: HTML, CSS, plain JavaScript), no build
step and nothing fetched from elsewhere, so it works on a controller without Internet
access. The page holds no data of its own: once an operator gives the operator token it
reads the JSON API (``/v1/nodes``, ``/v1/deployments``, ``/v1/rollouts``, ``/v1/events``)
with ``Authorization: Bearer`` every ``refresh_s`` seconds, so the API's checks are the
dashboard's checks and a revoked token ends the session::

    app = FastAPI()
    mount_dashboard(app)        # GET /ui -> the page; GET /ui/<file> -> its assets
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

from edgetier.errors import NotFoundError

__all__ = ["DASHBOARD_FILES", "DEFAULT_REFRESH_S", "mount_dashboard"]

DEFAULT_REFRESH_S: Final = 2.0
"""How often the page reads the API (``dashboard.js`` holds the same number; the page's
``?refresh_s=`` overrides it, between 0.5 and 60 s)."""

DASHBOARD_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
"""Every file the page is made of, with its media type; nothing else is served."""

# Only this origin, no inline script or style: data shown on the page (node names,
# event messages) can never run as code. The API is read with fetch from the same origin.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (resources.files("edgetier.control") / "_www" / name).read_bytes()


def mount_dashboard(app: FastAPI) -> None:
    """Add ``GET /ui`` (the page) and ``GET /ui/<file>`` to ``app``; no authentication:
    the files are the same for everyone and hold no fleet data."""

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui/{name}", include_in_schema=False)
    def ui_file(name: str) -> Response:
        media_type = DASHBOARD_FILES.get(name)
        if media_type is None:
            known = ", ".join(DASHBOARD_FILES)
            raise NotFoundError(f"dashboard file '{name}' does not exist; there are: {known}")
        return Response(_read(name), media_type=media_type, headers=_HEADERS)

    @app.get("/ui/", include_in_schema=False)
    def ui_index() -> Response:
        return ui_file("index.html")
