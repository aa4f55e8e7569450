"""The inference server's KServe v2 health and repository extension, as the agent calls it
on its own `edgetier serve` child (explicit model-control mode)::

    api = ServerApi(9000)
    await api.live()                       # True once /v2/health/live answers 200
    await api.index()                      # {"simple": {"1": "READY"}}
    await api.load("simple", {"1"})        # None, or why not
"""

from __future__ import annotations

import httpx

from edgetier.agent._client import error_text

__all__ = ["LOAD_TIMEOUT_S", "ServerApi"]

LOAD_TIMEOUT_S = 300.0
"""A load builds every version's engines (and a TensorRT one may compile): long."""


class ServerApi:
    """Calls to the server on 127.0.0.1; an ``httpx.HTTPError`` means it did not answer."""

    def __init__(self, port: int, *, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(timeout_s)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def live(self) -> bool:
        try:
            response = await self._http.get("/v2/health/live", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def index(self) -> dict[str, dict[str, str]]:
        """``{model: {version: state}}`` of the repository index (versions loaded or
        loading; a model never loaded has none)."""
        response = await self._http.post("/v2/repository/index", json={})
        response.raise_for_status()
        index: dict[str, dict[str, str]] = {}
        for row in response.json():
            versions = index.setdefault(str(row.get("name")), {})
            if row.get("version"):
                versions[str(row["version"])] = str(row.get("state", ""))
        return index

    async def load(self, model: str, versions: set[str]) -> str | None:
        """Load (or reload) ``model`` and check each of ``versions`` is ready; None on
        success, else why not."""
        response = await self._http.post(
            f"/v2/repository/models/{model}/load", timeout=LOAD_TIMEOUT_S
        )
        if response.status_code != 200:
            return f"load {model}: {response.status_code}: {error_text(response)}"
        for version in sorted(versions):
            ready = await self._http.get(f"/v2/models/{model}/versions/{version}/ready")
            if ready.status_code != 200:
                return f"{model} version {version} is not ready after its load"
        return None

    async def unload(self, model: str) -> str | None:
        """Unload ``model`` (the server answers its requests in flight first); None on
        success, else why not."""
        response = await self._http.post(
            f"/v2/repository/models/{model}/unload", timeout=LOAD_TIMEOUT_S
        )
        if response.status_code != 200:
            return f"unload {model}: {response.status_code}: {error_text(response)}"
        return None


def is_loaded(versions: dict[str, str]) -> bool:
    """Whether an index entry holds a version loaded or on its way."""
    return any(state in ("READY", "LOADING") for state in versions.values())
