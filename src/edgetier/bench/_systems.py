"""Start and stop the systems `bench compare` measures, each in its own process on 127.0.0.1.

Every server gets the same ONNX file, ONNX Runtime thread counts, max batch size and queue
delay. EdgeTier runs from this interpreter; PyTriton and Ray Serve run from the peer
interpreter (``--peer-python``), which may be a separate virtual environment.
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

import yaml

from edgetier.bench._engine_bench import model_specs
from edgetier.errors import ConfigError, EdgeTierError, MissingExtraError
from edgetier.runtime._datatypes import triton_name
from edgetier.testing import free_port

__all__ = [
    "PEER_INSTALL",
    "RunningSystem",
    "ServerSettings",
    "check_peer",
    "default_peer_python",
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


@dataclass(frozen=True)
class ServerSettings:
    """What every server gets alike."""

    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    dynamic_batching: bool = True
    provider: str = "cpu"
    intra_op_spinning: bool = True
    """False: ONNX Runtime's intra-op threads sleep instead of spinning between parallel
    sections (``session.intra_op.allow_spinning`` = 0), leaving the cores to the server's
    event loop and the client; applied to every system alike."""


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


def write_repository(root: Path, model: Path, name: str, settings: ServerSettings) -> Path:
    """A one-model EdgeTier repository whose config matches the peers' settings."""
    version_dir = root / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / "model.onnx"
    if not target.exists():
        os.symlink(model.resolve(), target)
    specs = model_specs(model)
    outs = _output_specs(model)
    batched = settings.max_batch_size > 0

    def tensor(n: str, dt: str, shape: tuple[int, ...]) -> dict[str, object]:
        return {
            "name": n,
            "data_type": triton_name(dt),
            "dims": list(shape[1:] if batched else shape),
        }

    config: dict[str, object] = {
        "max_batch_size": settings.max_batch_size,
        "input": [tensor(s.name, s.datatype, s.shape) for s in specs],
        "output": [tensor(s.name, s.datatype, s.shape) for s in outs],
        "instance_group": [
            {"count": 1, "kind": "KIND_CPU" if settings.provider == "cpu" else "KIND_GPU"}
        ],
        "optimization": {
            "execution_providers": {
                "cpu": ["cpu"],
                "cuda": ["cuda", "cpu"],
                "tensorrt": ["tensorrt", "cuda", "cpu"],
            }[settings.provider],
            "intra_op_threads": settings.intra_op_threads,
            "inter_op_threads": settings.inter_op_threads,
        },
    }
    spin = "1" if settings.intra_op_spinning else "0"  # explicit: EdgeTier's default is "0"
    config["parameters"] = {"session.intra_op.allow_spinning": spin}
    if settings.dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": settings.max_queue_delay_us}
    (root / name / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _output_specs(model: Path) -> list:  # type: ignore[type-arg]
    import onnx

    from edgetier.bench._loadgen import InputSpec
    from edgetier.runtime._datatypes import datatype_of_onnx

    proto = onnx.load(str(model), load_external_data=False)
    outs = []
    for vi in proto.graph.output:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        outs.append(InputSpec(vi.name, datatype_of_onnx(tt.elem_type), dims))
    return outs


def _wait_ready(system: RunningSystem, model: str, timeout_s: float) -> None:
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


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
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
    model: Path,
    name: str,
    settings: ServerSettings,
    workdir: Path,
    *,
    peer_python: Path | None = None,
    ready_timeout_s: float = 180.0,
) -> Iterator[RunningSystem]:
    """Start one server system on free 127.0.0.1 ports; stop it (and its children) on exit."""
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
        repo = write_repository(workdir / "repository", model, name, settings)
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
            "--model",
            str(model.resolve()),
            "--name",
            name,
            *listen,
            "--max-batch-size",
            str(settings.max_batch_size),
            "--max-queue-delay-us",
            str(settings.max_queue_delay_us),
            "--intra-op-threads",
            str(settings.intra_op_threads),
            "--inter-op-threads",
            str(settings.inter_op_threads),
            "--provider",
            settings.provider,
            "--dynamic-batching",
            str(int(settings.dynamic_batching)),
            "--intra-op-spinning",
            str(int(settings.intra_op_spinning)),
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
        _wait_ready(running, name, ready_timeout_s)
        yield running
    finally:
        _stop(proc)
