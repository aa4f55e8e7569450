"""The operations both front ends expose, in protocol-neutral terms (dicts and arrays).

HTTP returns these dicts as JSON; gRPC turns them into Triton's protobuf messages.
"""

from __future__ import annotations

from typing import Any

from edgetier import __version__
from edgetier.errors import InvalidInputError, ShutdownError
from edgetier.server._manager import ModelManager
from edgetier.server._shm import SharedMemoryRegistry

EXTENSIONS = (
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "statistics",
    "system_shared_memory",
)


class Backend:
    """Shared state of one server: models, shared-memory regions, readiness, draining.

    ``active`` counts the requests being served (bodies being read included), which a
    drain waits for; while ``draining``, new requests are refused with a 503.
    """

    def __init__(
        self, manager: ModelManager, shm: SharedMemoryRegistry, *, strict_readiness: bool = True
    ) -> None:
        self.manager = manager
        self.shm = shm
        self.live = True
        self.started = False
        self.draining = False
        self.strict_readiness = strict_readiness
        self.active = 0
        self.server_metadata: dict[str, Any] = {
            "name": "edgetier",
            "version": __version__,
            "extensions": list(EXTENSIONS),
        }

    @property
    def ready(self) -> bool:
        """Triton's readiness: serving, not draining and, when strict, every model that
        should be loaded is ready."""
        if not self.started or self.draining:
            return False
        return not self.strict_readiness or self.manager.all_ready()

    def refuse_while_draining(self) -> None:
        """Raise the 503 a request gets once the server has begun to shut down."""
        if self.draining:
            raise ShutdownError(
                "the server is shutting down and takes no new requests; send them to "
                "another node or retry when it is back"
            )

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        found = self.manager.get(name, version)
        return found.metadata(self.manager.versions_of(name))

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        return self.manager.get(name, version).config_json()

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        """Triton's statistics layout for one model (one or all versions) or all models."""
        if name:
            if version:
                versions = [self.manager.get(name, version)]
            else:
                self.manager.get(name)  # raises when the model is unknown or not loaded
                versions = [v for v in self.manager.loaded() if v.name == name]
        else:
            versions = self.manager.loaded()
        return {
            "model_stats": [
                v.stats.to_json(v.name, v.version, v.provider, v.batcher.stats)
                for v in sorted(versions, key=lambda v: (v.name, v.version))
            ]
        }

    def repository_index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        return self.manager.index(ready_only=ready_only)

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        if parameters:
            unknown = sorted(set(parameters) - {"unload_dependents"})
            if unknown:
                raise InvalidInputError(
                    f"load parameters {', '.join(unknown)} are not supported (a config or "
                    f"file override); change the model's files in the repository instead"
                )
        await self.manager.load(name)

    async def unload(self, name: str) -> None:
        await self.manager.unload(name)

    def shm_status(self, name: str = "") -> list[dict[str, object]]:
        return self.shm.status(name or None)

    def shm_register(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        for field, value in (("offset", offset), ("byte_size", byte_size)):
            if type(value) is not int:
                raise InvalidInputError(f"field {field!r} must be an integer, got {value!r}")
        if not isinstance(key, str):
            raise InvalidInputError(f"field 'key' must be a string, got {key!r}")
        self.shm.register(name, key, offset, byte_size)

    def shm_unregister(self, name: str = "") -> None:
        self.shm.unregister(name or None)
