"""Run the server in the foreground until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from edgetier.errors import EdgeTierError
from edgetier.hardware import TelemetryCollector
from edgetier.server._examples import examples
from edgetier.server._logging import setup_logging
from edgetier.server._server import InferenceServer
from edgetier.server._settings import ServerSettings

log = logging.getLogger("edgetier.server")

GIL_SWITCH_INTERVAL_S = 0.001
"""The interpreter's thread switch interval in a server process (Python's default: 5 ms)."""


async def _main(settings: ServerSettings, print_examples: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = InferenceServer(settings, collectors=[TelemetryCollector()])
    try:
        await server.start()
    except EdgeTierError as exc:
        log.error("cannot start: %s", exc.message)
        return 1
    if print_examples:
        print(
            examples(settings.host, server.http_port, server.grpc_port, server.metrics_port),
            flush=True,
        )
    await stop.wait()
    log.info("signal received: draining requests in flight")
    await server.stop()
    return 0


def run_until_signal(settings: ServerSettings, *, print_examples: bool = False) -> int:
    """Serve until a signal arrives; the exit status (0 after a clean drain)."""
    # The batcher's worker threads need the GIL between engine runs (to merge, split and
    # take the next batch) while the event loop holds it for the requests arriving; at
    # Python's default 5 ms they wait longer for it, the instances idle, and ResNet-50
    # under overload ran at 0.93-0.94 of capacity against 0.95-0.96 with 1 ms (alternating
    # runs of benchmarks/admission.py; the small model's capacity did not change).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    setup_logging(settings.log_format, settings.log_level)
    try:
        import uvloop

        return uvloop.run(_main(settings, print_examples))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_main(settings, print_examples))
    except KeyboardInterrupt:  # pragma: no cover
        return 0
    finally:
        sys.stdout.flush()
