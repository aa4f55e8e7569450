"""Start and stop the systems `bench compare` measures, each in its own process on 127.0.0.1.

Every server gets the same ONNX file, ONNX Runtime thread counts, max batch size and queue
delay, as :class:`~edgetier.bench._served.ServedModel` resolved them; EdgeTier serves that
model's config itself. EdgeTier runs from this interpreter; PyTriton and Ray Serve run from
the peer interpreter (``--peer-python``), which may be a separate virtual environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgetier.bench._served import ServedModel
from edgetier.errors import ConfigError, EdgeTierError, MissingExtraError
from edgetier.testing import free_port

__all__ = [
    "PEER_INSTALL",
    "RunningSystem",
    "check_peer",
    "default_peer_python",
    "peer_options",
    "peer_versions",
    "start_system",
]

SERVER_SYSTEMS = ("edgetier", "pytriton", "ray-serve")
PEER_MODULES = {"pytriton": "pytriton", "ray-serve": "ray.serve"}
PEER_INSTALL = (
    "python3 -m venv .venv-peers && .venv-peers/bin/pip install 'nvidia-pytriton==0.7.0' "
    "'onnxruntime==1.32.0' 'ray[serve]==2.60.0'   (then pass --peer-python "
    ".venv-peers/bin/python; in a fresh environment with numpy < 2, "
    "pip install 'edgetier[peers]' works too)"
)
_PEERS_DIR = Path(__file__).parent / "peers"


@dataclass
class RunningSystem:
    name: str
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int | None
    log: Path

    def url(self, protocol: str) -> str:
        if protocol == "grpc":
            if self.grpc_port is None:
                raise ConfigError(f"{self.name} does not speak gRPC; use http")
            return f"grpc://127.0.0.1:{self.grpc_port}"
        return f"http://127.0.0.1:{self.http_port}"


def default_peer_python() -> Path:
    """``.venv-peers/bin/python`` under the working directory if present, else this one."""
    local = Path(".venv-peers/bin/python")
    return local if local.exists() else Path(sys.executable)


def check_peer(system: str, python: Path) -> None:
    """Raise MissingExtraError with the install command when the peer cannot be imported."""
    module = PEER_MODULES[system]
    probe = subprocess.run(
        [str(python), "-c", f"import {module}"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        err = MissingExtraError(module, "peers")
        err.message = (
            f"{system}: {module} cannot be imported by {python}. Install the peers with: "
            f"{PEER_INSTALL}"
        )
        err.args = (err.message,)
        err.msg = err.message  # ImportError prints .msg
        raise err


def peer_versions(python: Path, systems: list[str]) -> dict[str, str]:
    """Versions of the peer packages as the peer interpreter sees them."""
    dists = {"pytriton": "nvidia-pytriton", "ray-serve": "ray"}
    wanted = [dists[s] for s in systems if s in dists]
    if not wanted:
        return {}
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    )
    proc = subprocess.run(
        [str(python), "-c", code, *wanted], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return {}
    import json

    return {str(k): str(v) for k, v in json.loads(proc.stdout).items()}


def _libdir(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def peer_options(served: ServedModel) -> list[str]:
    """The peer scripts' options (bench/peers/_common.py) that give them ``served``'s settings."""
    return [
        "--model",
        str(served.file.resolve()),
        "--name",
        served.name,
        "--max-batch-size",
        str(served.max_batch_size),
        "--max-queue-delay-us",
        str(served.max_queue_delay_us),
        "--intra-op-threads",
        str(served.intra_op_threads),
        "--inter-op-threads",
        str(served.inter_op_threads),
        "--provider",
        served.provider,
        "--dynamic-batching",
        str(int(served.dynamic_batching)),
        "--intra-op-spinning",
        str(int(served.intra_op_spinning)),
    ]


def wait_ready(system: RunningSystem, model: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{system.http_port}/v2/models/{model}/ready"
    while time.monotonic() < deadline:
        if system.proc.poll() is not None:
            raise EdgeTierError(
                f"{system.name} exited with code {system.proc.returncode} before it was ready; "
                f"last log lines:\n{_tail(system.log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise EdgeTierError(
        f"{system.name} was not ready within {timeout_s:.0f} s; last log lines:\n"
        f"{_tail(system.log)}"
    )


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
        proc.wait(timeout=10)


@contextlib.contextmanager
def start_system(
    system: str,
    served: ServedModel,
    workdir: Path,
    *,
    peer_python: Path | None = None,
    ready_timeout_s: float = 180.0,
) -> Iterator[RunningSystem]:
    """Start one server system on free 127.0.0.1 ports; stop it (and its children) on exit.

    EdgeTier serves ``served.config`` as it is; the peers get its settings as options.
    """
    if system not in SERVER_SYSTEMS:
        raise ConfigError(f"system must be one of {SERVER_SYSTEMS}, got {system!r}")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    listen = [
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
    ]
    if system == "edgetier":
        repo = served.write_repository(workdir / "repository")
        cmd = [
            sys.executable,
            "-c",
            "from edgetier.cli import main; main()",
            "serve",
            "--model-repository",
            str(repo),
            *listen,
            "--log-level",
            "warning",
        ]
    else:
        python = peer_python or default_peer_python()
        check_peer(system, python)
        script = "pytriton_server.py" if system == "pytriton" else "ray_server.py"
        cmd = [
            str(python),
            str(_PEERS_DIR / script),
            *peer_options(served),
            *listen,
        ]
        if system == "pytriton":
            # Its Python-backend stub links the interpreter's libpython.
            libdir = _libdir(python)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
            )
        else:
            env["RAY_USAGE_STATS_ENABLED"] = "0"
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{system}.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    running = RunningSystem(
        system, proc, http_port, None if system == "ray-serve" else grpc_port, log
    )
    try:
        wait_ready(running, served.name, ready_timeout_s)
        yield running
    finally:
        stop_process(proc)
