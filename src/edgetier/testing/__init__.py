"""Test helpers: free ports, services started for a test (a Mosquitto broker, an RTSP
relay, a PostgreSQL cluster), a live server, small models.

Tests and benchmarks take their ports, brokers and servers from here, and a suite gets
the pytest fixtures (``mosquitto``, ``rtsp_relay``, ``postgres``, ``postgres_url``,
``demo_repo``, ``server``, ``model_dir``) with ``pytest_plugins = ["edgetier.testing.fixtures"]``::

    with Mosquitto() as broker, running_server(demo_repository(tmp / "repo")) as server:
        ...

Names are imported on first use, so ``free_port`` costs no more than the socket module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetier._lazy import lazy_names

if TYPE_CHECKING:
    from edgetier.testing._models import make_random_classifier, make_random_detector
    from edgetier.testing._ports import free_port, free_tcp_block, free_udp_range, wait_for_port
    from edgetier.testing._postgres import PostgresCluster, postgres_bin_dir
    from edgetier.testing._server import (
        DEMO,
        RunningServer,
        ServerProcess,
        demo_repository,
        edit_config,
        read_http_response,
        running_server,
    )
    from edgetier.testing._services import Mosquitto, RtspRelay, ServiceProcess
    from edgetier.testing._tflite import make_tflite_mlp, tflite_mlp_reference

__all__ = [
    "DEMO",
    "Mosquitto",
    "PostgresCluster",
    "RtspRelay",
    "RunningServer",
    "ServerProcess",
    "ServiceProcess",
    "demo_repository",
    "edit_config",
    "eventually",
    "free_port",
    "free_tcp_block",
    "free_udp_range",
    "make_random_classifier",
    "make_random_detector",
    "make_tflite_mlp",
    "postgres_bin_dir",
    "read_http_response",
    "running_server",
    "tflite_mlp_reference",
    "wait_for_port",
]

_WHERE = {
    "free_port": "_ports",
    "free_tcp_block": "_ports",
    "free_udp_range": "_ports",
    "wait_for_port": "_ports",
    "eventually": "_ports",
    "Mosquitto": "_services",
    "PostgresCluster": "_postgres",
    "postgres_bin_dir": "_postgres",
    "RtspRelay": "_services",
    "ServiceProcess": "_services",
    "DEMO": "_server",
    "RunningServer": "_server",
    "ServerProcess": "_server",
    "demo_repository": "_server",
    "edit_config": "_server",
    "read_http_response": "_server",
    "running_server": "_server",
    "make_random_classifier": "_models",
    "make_random_detector": "_models",
    "make_tflite_mlp": "_tflite",
    "tflite_mlp_reference": "_tflite",
}


__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)
