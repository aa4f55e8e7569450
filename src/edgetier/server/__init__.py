"""The inference server: KServe v2 (Open Inference Protocol) over HTTP and gRPC.

    from edgetier.server import InferenceServer, ServerSettings
    async with InferenceServer(ServerSettings(model_repository="models")) as server:
        await server.wait_closed()

The wire format is exactly Triton's (the gRPC service is generated from Triton's protos,
shipped by tritonclient), so tritonclient and perf_analyzer work against it unchanged.
"""

from __future__ import annotations

from edgetier.server._logging import setup_logging
from edgetier.server._manager import ModelState
from edgetier.server._run import run_until_signal
from edgetier.server._server import InferenceServer
from edgetier.server._settings import ServerSettings
from edgetier.server._shm import SharedMemoryRegistry

__all__ = [
    "InferenceServer",
    "ModelState",
    "ServerSettings",
    "SharedMemoryRegistry",
    "run_until_signal",
    "setup_logging",
]
