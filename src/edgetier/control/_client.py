"""A small client of the controller's operator API (httpx, in the core install).

The CLI uses it; so can scripts. The token comes from the argument, ``EDGETIER_TOKEN`` or
``var/controller/operator-token``; errors come back as EdgeTier's own, with the
controller's message::

    with ControllerClient("http://127.0.0.1:8080") as client:
        client.get("/v1/nodes")
        client.put("/v1/deployments/traffic", json=resource)
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from edgetier.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    EdgeTierError,
    NotFoundError,
    PermissionDeniedError,
    StartupError,
)

__all__ = ["DEFAULT_CONTROLLER", "DEFAULT_TOKEN_FILE", "ControllerClient", "default_token"]

DEFAULT_CONTROLLER = "http://127.0.0.1:8080"
DEFAULT_TOKEN_FILE = Path("var/controller/operator-token")

_ERRORS: dict[int, type[EdgeTierError]] = {
    400: ConfigError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ConfigError,
}


def default_token(token: str | None = None) -> str | None:
    """The token given, else ``EDGETIER_TOKEN``, else the local controller's token file."""
    if token:
        return token.strip()
    if os.environ.get("EDGETIER_TOKEN"):
        return os.environ["EDGETIER_TOKEN"].strip()
    if DEFAULT_TOKEN_FILE.is_file():
        return DEFAULT_TOKEN_FILE.read_text(encoding="utf-8").strip() or None
    return None


class ControllerClient:
    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout_s: float = 30.0
    ) -> None:
        self.url = (url or os.environ.get("EDGETIER_CONTROLLER") or DEFAULT_CONTROLLER).rstrip("/")
        headers = {}
        resolved = default_token(token)
        if resolved:
            headers["Authorization"] = f"Bearer {resolved}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON; an EdgeTier error with the controller's message otherwise."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise StartupError(
                f"cannot reach the controller at {self.url}: {exc or type(exc).__name__} "
                "(start it with `edgetier controller`, or pass --controller URL)"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error") or response.text
            except ValueError:
                message = response.text or response.reason_phrase
            error = _ERRORS.get(response.status_code, EdgeTierError)
            raise error(f"{message} (HTTP {response.status_code})")
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)
