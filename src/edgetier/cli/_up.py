"""`edgetier up`: the whole fleet on one machine, in one command.

A controller on SQLite, three agents (this machine, and two presenting other tiers'
hardware profiles so that a deployment visibly moves), Mosquitto when it is installed, and
two demo deployments: the demo model `simple` served on this machine's node, and the
synthetic traffic pipeline on an edge or region node. It prints where to look, and stops
everything on Ctrl-C or SIGTERM.

$ edgetier up
$ edgetier nodes drain region-1      # in another terminal: the traffic moves
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import typer

NODES = (
    # name, tier, presented profile (None: this machine's), port base, labels
    ("local", None, None, 0, "role=inference"),
    ("nano-1", "terminal", "jetson-nano", 100, "site=pole-7"),
    ("region-1", "region", "a100-sxm4-80gb", 200, "site=regional-dc"),
)
READY_TIMEOUT_S = 180.0


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def up(
    port: int = typer.Option(8080, "--port", help="The controller's port."),
    port_base: int = typer.Option(
        9000, "--port-base", help="The agents' first port (this machine's inference server)."
    ),
    data_dir: Path = typer.Option(
        Path("var"), "--data-dir", help="Controller, agents and logs go below this."
    ),
    broker: bool = typer.Option(
        True,
        "--broker/--no-broker",
        help="Start Mosquitto on 1883 when it is installed (events, change notices).",
    ),
) -> None:
    """Run a controller, three agents (three tiers) and the demo deployments on this machine;
    Ctrl-C stops them all."""
    from edgetier.errors import EdgeTierError

    fleet = _Fleet(port=port, port_base=port_base, data_dir=data_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        fleet.check_ports(broker)
        if broker:
            fleet.start_broker()
        fleet.start_controller()
        fleet.start_agents()
        fleet.deploy_demo()
        fleet.wait_running(stop)
        fleet.print_guide()
        while not stop.wait(1.0):
            fleet.watch()
    except EdgeTierError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        fleet.stop()


class _Fleet:
    def __init__(self, *, port: int, port_base: int, data_dir: Path) -> None:
        self.port = port
        self.port_base = port_base
        self.url = f"http://127.0.0.1:{port}"
        self.controller_dir = data_dir / "controller"
        self.agents_dir = data_dir / "agent"
        self.logs = data_dir / "up-logs"
        self.children: list[_Child] = []
        self.broker = False
        self.notices: list[str] = []  # --mqtt for the controller and agents
        self.exe = str(Path(sys.executable).with_name("edgetier"))

    # -- starting ----------------------------------------------------------------------

    def check_ports(self, broker: bool) -> None:
        from edgetier.errors import StartupError

        wanted = [(self.port, "the controller")]
        for name, _, _, offset, _ in NODES:
            wanted.append((self.port_base + offset, f"node {name}'s inference server"))
        for number, what in wanted:
            if not _free(number):
                raise StartupError(
                    f"port {number} ({what}) is taken: is an earlier `edgetier up` or "
                    "`edgetier serve` still running? Stop it, or pick others with --port "
                    "and --port-base"
                )
        self.broker = broker and _free(1883) and shutil.which("mosquitto") is not None
        # change notices over that broker when paho-mqtt (the mqtt extra) is installed
        self.notices = ["--mqtt", "mqtt://127.0.0.1:1883"] if self.broker and _has_paho() else []

    def _spawn(self, name: str, args: list[str]) -> _Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        child = _Child(name, proc, log)
        self.children.append(child)
        return child

    def start_broker(self) -> None:
        if not self.broker:
            return
        config = self.logs / "mosquitto.conf"
        self.logs.mkdir(parents=True, exist_ok=True)
        config.write_text("listener 1883 127.0.0.1\nallow_anonymous true\n")
        binary = shutil.which("mosquitto") or "mosquitto"
        self._spawn("mosquitto", [binary, "-c", str(config)])
        _wait_port(1883, 10.0, "mosquitto")

    def start_controller(self) -> None:
        self._step("starting the controller")
        child = self._spawn(
            "controller",
            [
                self.exe,
                "controller",
                "--data-dir",
                str(self.controller_dir),
                "--port",
                str(self.port),
                *self.notices,
            ],
        )
        deadline = time.monotonic() + 60
        while not self._healthy():
            if child.proc.poll() is not None or time.monotonic() > deadline:
                raise _failed(child, "the controller did not start")
            time.sleep(0.2)
        self.token = (self.controller_dir / "operator-token").read_text().strip()

    def _healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_agents(self) -> None:
        from edgetier.control import ControllerClient

        with ControllerClient(self.url, self.token) as api:
            existing = {n["metadata"]["name"] for n in api.get("/v1/nodes")}
            for name, tier, profile, offset, labels in NODES:
                store = self.agents_dir / name
                args = [
                    self.exe,
                    "agent",
                    "--controller",
                    self.url,
                    "--name",
                    name,
                    "--port-base",
                    str(self.port_base + offset),
                    "--store",
                    str(store),
                    "--labels",
                    labels,
                    *self.notices,
                ]
                if name not in existing or not (store / "agent.db").exists():
                    token = api.post(
                        "/v1/tokens",
                        json={"kind": "enrol", "description": f"edgetier up: {name}"},
                    )
                    args += ["--token", token["token"]]
                if tier is not None:
                    args += ["--tier", tier]
                if profile is not None:
                    args += ["--profile", profile]
                self._step(f"starting node {name}" + (f" (presents {profile})" if profile else ""))
                self._spawn(f"agent-{name}", args)
            # the first placement should see every node: wait until all have enrolled
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                self.watch()
                enrolled = {n["metadata"]["name"] for n in api.get("/v1/nodes")}
                if all(name in enrolled for name, *_ in NODES):
                    break
                time.sleep(0.5)

    def deploy_demo(self) -> None:
        from edgetier.config import read_yaml
        from edgetier.control import ControllerClient
        from edgetier.pipeline import package_models_dir
        from edgetier.synthetic import build_demo_repository

        demo = Path(str(resources.files("edgetier.synthetic") / "fleet_demo"))
        models = self.controller_dir.parent / "up-models"
        build_demo_repository(models, models=["simple"])
        with ControllerClient(self.url, self.token) as api:
            pushed = {m["name"] for m in api.get("/v1/models")}
            for name, path, config in (
                ("detector", package_models_dir() / "detector.onnx", None),
                ("simple", models / "simple" / "1" / "model.onnx", models / "simple/config.yaml"),
            ):
                if name in pushed:
                    continue
                self._step(f"pushing model {name}")
                files: dict[str, Any] = {"file": (path.name, path.read_bytes())}
                if config is not None and config.is_file():
                    files["config"] = (config.name, config.read_bytes())
                api.post(f"/v1/models/{name}/versions", files=files)
            pipeline = read_yaml(demo / "traffic-pipeline.yaml", what="pipeline file")
            api.put(
                "/v1/pipelines/traffic-synthetic",
                json={"file": "traffic-pipeline.yaml", "content": pipeline},
            )
            for file in ("serving.yaml", "traffic.yaml"):
                body = read_yaml(demo / file, what="Deployment file")
                self._step(f"applying deployment {body['metadata']['name']}")
                api.put(f"/v1/deployments/{body['metadata']['name']}", json=body)

    def wait_running(self, stop: threading.Event) -> None:
        """Until every demo deployment reports Ready (its nodes run it), or a timeout."""
        from edgetier.control import ControllerClient

        self._step("waiting for the nodes to run their assignments")
        deadline = time.monotonic() + READY_TIMEOUT_S
        with ControllerClient(self.url, self.token) as api:
            while not stop.is_set() and time.monotonic() < deadline:
                self.watch()
                deployments = api.get("/v1/deployments")
                if deployments and all(_ready(d) for d in deployments):
                    return
                stop.wait(1.0)
        if not stop.is_set():
            typer.echo(
                f"  not everything runs yet after {READY_TIMEOUT_S:.0f} s: see "
                f"`edgetier deploy status` and the logs in {self.logs}/",
                err=True,
            )

    # -- running -----------------------------------------------------------------------

    def watch(self) -> None:
        """Say so when a child of ours ended (the fleet goes on without it)."""
        for child in list(self.children):
            code = child.proc.poll()
            if code is not None:
                self.children.remove(child)
                typer.echo(f"  {child.name} exited with {code}; its log: {child.log}", err=True)

    def print_guide(self) -> None:
        from edgetier.control import ControllerClient

        with ControllerClient(self.url, self.token) as api:
            traffic = api.get("/v1/deployments/traffic")
        on = [p["node"] for p in traffic["status"]["placements"]]
        node = on[0] if on else "region-1"
        if not self.broker:
            broker = "  events     MQTT events wait in the nodes' outboxes (no Mosquitto here)\n"
        elif shutil.which("mosquitto_sub"):
            broker = (
                "  events     mosquitto_sub -t 'edgetier/#' -v   (Mosquitto on 127.0.0.1:1883)\n"
            )
        else:
            broker = (
                "  events     MQTT on 127.0.0.1:1883, topics edgetier/<node>/<pipeline>/<kind>\n"
            )
        typer.echo(
            "\nEdgeTier is up: a controller, 3 nodes in 3 tiers, 2 deployments.\n\n"
            f"  API        {self.url}   (OpenAPI docs {self.url}/docs, metrics "
            f"{self.url}/metrics)\n"
            f"  dashboard  {self.url}/ui   (sign in with the token)\n"
            f"  token      {self.token}\n"
            f"             (the CLI reads it from {self.controller_dir}/operator-token)\n"
            "  nodes      local (this machine, serves the demo model), nano-1 (terminal, "
            "presents jetson-nano), region-1 (region, presents a100-sxm4-80gb)\n"
            f"  traffic    on {', '.join(on) or '(not placed)'}\n"
            f"{broker}"
            f"  logs       {self.logs}/\n\n"
            "Try, in another terminal:\n"
            "  edgetier nodes ls\n"
            "  edgetier deploy status\n"
            "  edgetier deploy explain traffic\n"
            f"  edgetier nodes drain {node}        # then `edgetier deploy status traffic`: "
            "it moves\n"
            f'  curl -s {self.url}/v1/events -H "Authorization: Bearer $(cat '
            f'{self.controller_dir}/operator-token)"\n'
            f"  curl -s localhost:{self.port_base}/v2/models/simple      # the local node's "
            "inference server\n\n"
            "Ctrl-C stops everything; `edgetier up` again picks up where it left off.\n"
        )

    def stop(self) -> None:
        """Agents first (they drain their servers and pipelines), then the controller."""
        order = sorted(self.children, key=lambda c: (c.name == "mosquitto", c.name == "controller"))
        for child in order:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(30)
            if child.proc.poll() is None:
                child.proc.kill()
        self.children.clear()

    @staticmethod
    def _step(message: str) -> None:
        typer.echo(f"- {message}")


def _ready(deployment: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in deployment["status"]["conditions"]
    )


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_port(port: int, timeout_s: float, what: str) -> None:
    from edgetier.errors import StartupError

    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise StartupError(f"{what} did not listen on port {port} within {timeout_s} s")
        time.sleep(0.1)


def _failed(child: _Child, what: str) -> Exception:
    from edgetier.errors import StartupError

    tail = child.log.read_text(errors="replace")[-2000:] if child.log.exists() else ""
    return StartupError(f"{what}; the end of its log ({child.log}):\n{tail}")


def _has_paho() -> bool:
    import importlib.util

    return importlib.util.find_spec("paho") is not None
