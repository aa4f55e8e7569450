"""The fleet at scale: a real controller, N simulated nodes (``edgetier fleet simulate``)
heartbeating every --heartbeat-s with telemetry, and what the controller does meanwhile.

Phases, one after the other, the simulated fleet running throughout:

1. enrol: the simulator enrols N nodes (one-time tokens); the time until all are in.
2. steady (--steady-s): an operator polls the API (list nodes, get a deployment, the
   event log) one request every --operator-interval-s; their p50/p99 per route, the
   heartbeats the controller answered per second, the CPU of the simulator and of each
   controller process, the database's growth (bytes, telemetry rows and events) per
   node per day at this rate.
3. converge: one deployment with a replica on every node (up to 1,000, the API's limit);
   the time from the apply until it is Ready (every placement reports Running).
4. rollout: when the controller has a rollout API (``GET /v1/rollouts`` answers), a new
   model version rolled out in 10 batches; the time until it succeeded. Skipped, and
   said so, when the API is absent.
5. saturation (--saturation-s): a second simulator adds --saturation-nodes nodes that
   heartbeat as fast as they can; the heartbeats per second the controller answers (all
   nodes together) with both simulators and the controller on this machine's cores.

    python benchmarks/fleet_scale.py --nodes 1000 --heartbeat-s 10
    python benchmarks/fleet_scale.py --database-url postgresql+psycopg://u@127.0.0.1:5432/db \\
        --replicas 2

SQLite by default (a temporary data dir); with --database-url every replica is a
controller process of its own on that database. Writes benchmarks/results/<stem>.json and
<stem>.md (machine, date, command).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from edgetier.testing import PostgresCluster, free_port, make_random_classifier

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONTROLLER_PY = HERE / "_fleet_controller.py"
OPERATOR_ROUTES = (
    "/v1/nodes",
    "/v1/nodes?limit=100",
    "/v1/deployments/probe",
    "/v1/events?limit=100",
)
DAY_S = 86_400.0


def _options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--heartbeat-s", type=float, default=10.0)
    p.add_argument("--steady-s", type=float, default=120.0, help="the steady window")
    p.add_argument("--operator-interval-s", type=float, default=0.25)
    p.add_argument("--saturation-s", type=float, default=30.0, help="0: skip")
    p.add_argument("--saturation-nodes", type=int, default=50, help="each one request at a time")
    p.add_argument("--saturation-heartbeat-s", type=float, default=0.02)
    p.add_argument("--converge-timeout-s", type=float, default=300.0)
    p.add_argument(
        "--rollout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the 10-batch rollout phase (--no-rollout: skip it, e.g. for quick comparisons)",
    )
    p.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    p.add_argument(
        "--postgres",
        action="store_true",
        help="start a PostgreSQL cluster of its own (initdb, PostgreSQL's durability "
        "defaults) and use it",
    )
    p.add_argument("--replicas", type=int, default=1, help="controller processes (PostgreSQL)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--stem", default=None, help="default: fleet_scale_<db>_<replicas>r_<nodes>")
    p.add_argument("--keep", action="store_true", help="keep the data dir and the logs")
    args = p.parse_args()
    if args.replicas < 1:
        p.error(f"--replicas must be >= 1, got {args.replicas}")
    if args.postgres and args.database_url:
        p.error("--postgres starts its own database: give it or --database-url, not both")
    postgres = args.postgres or (args.database_url or "").startswith("postgresql")
    if args.replicas > 1 and not postgres:
        p.error(f"--replicas {args.replicas} needs a PostgreSQL --database-url (SQLite: one)")
    if args.nodes < 1:
        p.error(f"--nodes must be >= 1, got {args.nodes}")
    return args


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000.0 * value, 2)


def _cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _edgetier() -> str:
    beside = Path(sys.executable).parent / "edgetier"
    found = str(beside) if beside.exists() else shutil.which("edgetier")
    if found is None:
        raise SystemExit("the edgetier command is not installed (make install)")
    return found


def _terminate(process: subprocess.Popen[bytes], wait_s: float) -> None:
    """SIGTERM, and SIGKILL after ``wait_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pcts(before: list[float], after: list[float], wall_s: float) -> list[float]:
    """CPU seconds over a window as % of one core, per process."""
    return [round(100 * (b - a) / wall_s, 1) for a, b in zip(before, after, strict=True)]


class Replica:
    """One controller process."""

    def __init__(self, index: int, data_dir: Path, settings: dict[str, Any], log: Path) -> None:
        self.index = index
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**settings, "data_dir": str(data_dir), "port": self.port}
        self._log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(CONTROLLER_PY), json.dumps(full)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.flush()
                tail = self._log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise SystemExit(f"controller replica {self.index} exited: {' | '.join(tail)}")
            try:
                answer = httpx.get(self.url + "/healthz", timeout=2)
                if answer.status_code == 200:
                    return dict(answer.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"controller replica {self.index} did not answer in {timeout_s:.0f} s")

    def stop(self) -> None:
        _terminate(self.process, 20.0)
        self._log.close()


class Simulator:
    """An ``edgetier fleet simulate`` process; SIGTERM ends it early with its report."""

    def __init__(self, urls: list[str], token: str, options: list[str], work: Path, name: str):
        self.report_path = work / f"{name}.json"
        self._log = (work / f"{name}.log").open("wb")
        self.command = [
            _edgetier(),
            "fleet",
            "simulate",
            "--controller",
            ",".join(urls),
            *options,
            "--report",
            str(self.report_path),
        ]
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "EDGETIER_TOKEN": token},
        )

    def stop(self) -> dict[str, Any]:
        _terminate(self.process, 60.0)
        self._log.close()
        if self.report_path.is_file():
            return dict(json.loads(self.report_path.read_text()))
        return {"error": f"no report (exit status {self.process.returncode})"}


class OperatorLoad:
    """Operator requests one after the other, round-robin over routes and replicas, in a
    thread; latency per route."""

    def __init__(self, urls: list[str], token: str, interval_s: float) -> None:
        self.urls, self.interval_s = urls, interval_s
        self.headers = {"Authorization": f"Bearer {token}"}
        self.samples: dict[str, list[float]] = {r: [] for r in OPERATOR_ROUTES}
        self.errors: dict[str, int] = dict.fromkeys(OPERATOR_ROUTES, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as http:
            i = 0
            while not self._stop.is_set():
                route = OPERATOR_ROUTES[i % len(OPERATOR_ROUTES)]
                url = self.urls[(i // len(OPERATOR_ROUTES)) % len(self.urls)]
                started = time.perf_counter()
                try:
                    answer = http.get(url + route)
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.samples[route].append(time.perf_counter() - started)
                else:
                    self.errors[route] += 1
                i += 1
                self._stop.wait(self.interval_s)

    def __enter__(self) -> OperatorLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def figures(self) -> dict[str, Any]:
        every = [x for values in self.samples.values() for x in values]
        routes = {
            route: {
                "count": len(values),
                "errors": self.errors[route],
                "p50_ms": _ms(_percentile(values, 0.50)),
                "p99_ms": _ms(_percentile(values, 0.99)),
                "max_ms": _ms(max(values) if values else None),
            }
            for route, values in self.samples.items()
        }
        return {"p99_ms": _ms(_percentile(every, 0.99)), "count": len(every), "routes": routes}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="fleet-scale-"))
        self.replicas: list[Replica] = []
        self.simulators: list[Simulator] = []
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []

    # -- set-up ---------------------------------------------------------------------------

    def start_controllers(self) -> None:
        a = self.args
        settings: dict[str, Any] = {
            "node_timeout_s": max(15.0, 3.5 * a.heartbeat_s),
            "heartbeat_interval_s": a.heartbeat_s,
        }
        if a.database_url:
            settings["database_url"] = a.database_url
        for i in range(a.replicas):
            # replicas share one data dir: the model files live there, not in the database
            replica = Replica(i, self.work / "controller", settings, self.work / f"c{i}.log")
            self.replicas.append(replica)
            health = replica.wait_ready()  # the first migrates before the next starts
            self.figures.setdefault("replicas", []).append(health)
        token_file = self.replicas[0].data_dir / "operator-token"
        self.token = token_file.read_text(encoding="utf-8").strip()
        self.http = httpx.Client(
            base_url=self.replicas[0].url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def push(self, version: int) -> dict[str, Any]:
        path = make_random_classifier(self.work / f"classifier-{version}.onnx", seed=version)
        answer = self.http.post(
            "/v1/models/classifier/versions",
            files={"file": ("model.onnx", path.read_bytes())},
            data={"version": str(version)},
        )
        answer.raise_for_status()
        return dict(answer.json())

    def apply(self, name: str, spec: dict[str, Any]) -> httpx.Response:
        body = {"apiVersion": "edgetier/v1", "kind": "Deployment", "metadata": {"name": name}}
        return self.http.put(f"/v1/deployments/{name}", json={**body, "spec": spec})

    def _controllers_cpu_s(self) -> list[float]:
        return [_cpu_s(r.process.pid) for r in self.replicas]

    def _heartbeats(self) -> tuple[float, float]:
        """Heartbeats answered 200 and records stored, summed over the replicas."""
        beats = records = 0.0
        for replica in self.replicas:
            text = httpx.get(replica.url + "/metrics", timeout=30).text
            for line in text.splitlines():
                if line.startswith("edgetier_controller_requests_total{") and (
                    'route="/v1/nodes/{node}/heartbeat"' in line and 'code="200"' in line
                ):
                    beats += float(line.rsplit(" ", 1)[1])
                elif line.startswith("edgetier_controller_records_ingested_total "):
                    records += float(line.rsplit(" ", 1)[1])
        return beats, records

    def _database(self) -> dict[str, float]:
        """The database's size in bytes and its telemetry and event rows."""
        from sqlalchemy import create_engine, text

        url = self.args.database_url or f"sqlite:///{self.replicas[0].data_dir / 'controller.db'}"
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                telemetry = connection.execute(text("SELECT count(*) FROM telemetry")).scalar()
                events = connection.execute(text("SELECT count(*) FROM events")).scalar()
                if url.startswith("sqlite"):
                    db = self.replicas[0].data_dir / "controller.db"
                    size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
                else:
                    size = connection.execute(
                        text("SELECT pg_database_size(current_database())")
                    ).scalar()
        finally:
            engine.dispose()
        return {
            "bytes": float(size or 0),
            "telemetry": float(telemetry or 0),
            "events": float(events or 0),
        }

    def _node_names(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.http.get("/v1/nodes").json()]

    def _wait(self, check: Callable[[], bool], timeout_s: float, what: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if check():
                return time.monotonic() - started
            for sim in self.simulators:
                if sim.process.poll() is not None:
                    raise SystemExit(f"the simulator exited ({sim.process.returncode}): {what}")
            time.sleep(1.0)
        raise SystemExit(f"{what}: not within {timeout_s:.0f} s")

    # -- phases ---------------------------------------------------------------------------

    def enrol(self) -> None:
        a = self.args
        self.push(1)
        answer = self.apply("probe", {"model": {"name": "classifier"}, "replicas": 1})
        answer.raise_for_status()
        options = [
            "--nodes", str(a.nodes), "--heartbeat-s", str(a.heartbeat_s),
            "--duration-s", str(100_000), "--prefix", "sim", "--progress-s", "10",
            "--overheating", "0", "--dropped-links", "0", "--flapping", "0",
        ]  # fmt: skip
        self.simulators.append(Simulator(self.urls, self.token, options, self.work, "sim"))
        self.sim_command = "edgetier fleet simulate " + shlex.join(options)
        enrolled = self._wait(
            lambda: sum(n.startswith("sim-") for n in self._node_names()) >= a.nodes,
            max(120.0, a.nodes * 0.5),
            f"enrolling {a.nodes} nodes",
        )
        self.figures["enrol_all_s"] = round(enrolled, 1)
        time.sleep(a.heartbeat_s + 2.0)  # every node heartbeats once; phases spread

    def steady(self) -> None:
        a = self.args
        sim = self.simulators[0].process.pid
        db0, (beats0, records0) = self._database(), self._heartbeats()
        cpu_sim0, cpu_c0, t0 = _cpu_s(sim), self._controllers_cpu_s(), time.monotonic()
        with OperatorLoad(self.urls, self.token, a.operator_interval_s) as load:
            time.sleep(a.steady_s)
        wall = time.monotonic() - t0
        cpu_sim1, cpu_c1 = _cpu_s(sim), self._controllers_cpu_s()
        db1, (beats1, records1) = self._database(), self._heartbeats()
        per_node_day = DAY_S / (wall * a.nodes)
        self.figures["steady"] = {
            "window_s": round(wall, 1),
            "operator_api": load.figures(),
            "heartbeats_per_s": round((beats1 - beats0) / wall, 1),
            "records_per_s": round((records1 - records0) / wall, 1),
            "simulator_cpu_pct_of_one_core": round(100 * (cpu_sim1 - cpu_sim0) / wall, 1),
            "controller_cpu_pct_of_one_core": _pcts(cpu_c0, cpu_c1, wall),
            "database": {
                "bytes_start": db0["bytes"],
                "bytes_end": db1["bytes"],
                "growth_bytes_per_node_per_day": round(
                    (db1["bytes"] - db0["bytes"]) * per_node_day
                ),
                "telemetry_rows_per_node_per_day": round(
                    (db1["telemetry"] - db0["telemetry"]) * per_node_day
                ),
                "events_per_node_per_day": round((db1["events"] - db0["events"]) * per_node_day),
            },
        }

    def converge(self) -> None:
        a = self.args
        replicas = min(a.nodes, 1000)
        started = time.monotonic()
        # version 1 named: pushing version 2 then starts no rollout of its own (an unnamed
        # model rolls out when a version is pushed, under the policy the spec has then)
        spec = {"model": {"name": "classifier", "version": 1}, "replicas": replicas}
        answer = self.apply("fleet", spec)
        applied = time.monotonic() - started
        if answer.status_code not in (200, 201):
            self.figures["converge"] = {"error": f"HTTP {answer.status_code}: {answer.text}"}
            return

        def ready() -> bool:
            view = self.http.get("/v1/deployments/fleet").json()
            status = view["status"]
            return len(status["placements"]) == replicas and any(
                c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"]
            )

        try:
            took = self._wait(ready, a.converge_timeout_s, "the deployment converging")
        except SystemExit as exc:
            self.figures["converge"] = {"replicas": replicas, "error": str(exc)}
            return
        self.figures["converge"] = {
            "replicas": replicas,
            "apply_s": round(applied, 2),
            "ready_s": round(time.monotonic() - started, 1),
            "polled_every_s": 1.0,
            "wait_s_measured": round(took, 1),
        }

    def rollout(self) -> None:
        a = self.args
        if not a.rollout:
            self.figures["rollout"] = {"skipped": "--no-rollout"}
            return
        probe = self.http.get("/v1/rollouts")
        if probe.status_code == 404:
            self.figures["rollout"] = {"skipped": "this controller has no rollout API (404)"}
            return
        self.push(2)
        spec = {
            "model": {"name": "classifier", "version": 2},
            "replicas": min(a.nodes, 1000),
            "rollout": {"batches": 10},
        }
        started = time.monotonic()
        answer = self.apply("fleet", spec)
        if answer.status_code not in (200, 201):
            self.figures["rollout"] = {"error": f"apply: HTTP {answer.status_code}: {answer.text}"}
            return
        final = {"Succeeded", "RolledBack", "Undone"}
        state: dict[str, Any] = {}

        def done() -> bool:
            nonlocal state
            reply = self.http.get("/v1/deployments/fleet/rollout")
            state = reply.json() if reply.status_code == 200 else {}
            return state.get("state") in final

        try:
            self._wait(done, a.converge_timeout_s * 3, "the rollout")
        except SystemExit as exc:
            self.figures["rollout"] = {"error": str(exc), "last": state}
            return
        self.figures["rollout"] = {
            "batches": state.get("batches"),
            "state": state.get("state"),
            "done_s": round(time.monotonic() - started, 1),
        }

    def saturate(self) -> None:
        a = self.args
        if a.saturation_s <= 0:
            return
        # the fleet-wide deployment goes first: a node that misses its timeout while the
        # controller is saturated would move a thousand replicas under the write lock
        self.http.delete("/v1/deployments/fleet")
        options = [
            "--nodes", str(a.saturation_nodes), "--heartbeat-s", str(a.saturation_heartbeat_s),
            "--duration-s", str(100_000), "--prefix", "sat", "--progress-s", "10",
            "--overheating", "0", "--dropped-links", "0", "--flapping", "0",
            "--no-download", "--wait-s", "60",
        ]  # fmt: skip
        sat = Simulator(self.urls, self.token, options, self.work, "saturation")
        self.simulators.append(sat)
        self._wait(
            lambda: sum(n.startswith("sat-") for n in self._node_names()) >= a.saturation_nodes,
            120.0,
            "enrolling the saturating nodes",
        )
        time.sleep(3.0)
        pids = [s.process.pid for s in self.simulators]
        beats0, records0 = self._heartbeats()
        cpu_sims0, cpu_c0, t0 = (
            [_cpu_s(p) for p in pids],
            self._controllers_cpu_s(),
            time.monotonic(),
        )
        time.sleep(a.saturation_s)
        wall = time.monotonic() - t0
        cpu_sims1, cpu_c1 = [_cpu_s(p) for p in pids], self._controllers_cpu_s()
        beats1, records1 = self._heartbeats()
        self.figures["saturation"] = {
            "window_s": round(wall, 1),
            "nodes": a.nodes + a.saturation_nodes,
            "heartbeats_per_s": round((beats1 - beats0) / wall, 1),
            "records_per_s": round((records1 - records0) / wall, 1),
            "simulators_cpu_pct_of_one_core": _pcts(cpu_sims0, cpu_sims1, wall),
            "controller_cpu_pct_of_one_core": _pcts(cpu_c0, cpu_c1, wall),
        }

    def close(self) -> None:
        reports = [sim.stop() for sim in self.simulators]
        if reports:
            self.figures["simulator_reports"] = reports
        for replica in reversed(self.replicas):
            replica.stop()
        if hasattr(self, "http"):
            self.http.close()
        if self.args.keep:
            print(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def _machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "load_average_1_5_15_min": {
            "start": [round(x, 2) for x in load_before],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "note": "a shared machine: other jobs ran beside this benchmark",
    }


def _row(what: str, value: Any, target: str = "") -> str:
    return f"| {what} | {value} | {target} |"


def markdown(result: dict[str, Any]) -> str:
    f = result["figures"]
    c = result["config"]
    steady = f.get("steady", {})
    api = steady.get("operator_api", {})
    db = steady.get("database", {})
    converge = f.get("converge", {})
    rollout = f.get("rollout", {})
    sat = f.get("saturation", {})
    aborted = [f"- **aborted**: {f['aborted']}"] if f.get("aborted") else []
    lines = [
        f"### Fleet at scale: {c['nodes']} nodes, heartbeat {c['heartbeat_s']:g} s, "
        f"{c['database']}, {c['replicas']} replica(s)",
        "",
        f"- date: {result['date']}",
        f"- machine: {result['machine']['platform']}, {result['machine']['cpus']} vCPUs, "
        f"{result['machine']['memory_gb']} GiB ({result['machine']['note']}; load average "
        f"at the start {result['machine']['load_average_1_5_15_min']['start']}, at the end "
        f"{result['machine']['load_average_1_5_15_min']['end']})",
        f"- command: `{result['command']}`",
        f"- simulator: `{result['simulator_command']}`",
        *aborted,
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        _row("all nodes enrolled", f"{f.get('enrol_all_s')} s"),
        _row("operator API p99 (all routes)", f"{api.get('p99_ms')} ms", "< 50 ms"),
    ]
    for route, r in api.get("routes", {}).items():
        lines.append(
            _row(
                f"  `GET {route}` p50 / p99 / max",
                f"{r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} ms ({r['count']} requests, "
                f"{r['errors']} errors)",
            )
        )
    lines += [
        _row("heartbeats answered, steady", f"{steady.get('heartbeats_per_s')} /s"),
        _row("simulator CPU, steady",
             f"{steady.get('simulator_cpu_pct_of_one_core')} % of a core"),
        _row("controller CPU, steady",
             f"{steady.get('controller_cpu_pct_of_one_core')} % of a core"),
        _row("database growth per node per day", f"{db.get('growth_bytes_per_node_per_day')} B"),
        _row("  telemetry rows / events per node per day",
             f"{db.get('telemetry_rows_per_node_per_day')} / {db.get('events_per_node_per_day')}"),
        _row(f"one deployment on {converge.get('replicas')} nodes: Ready after",
             f"{converge.get('ready_s', converge.get('error'))} s"),
        _row("rollout in 10 batches: done after",
             rollout.get("skipped") or rollout.get("error") or f"{rollout.get('done_s')} s "
             f"({rollout.get('state')}, {rollout.get('batches')} batches)"),
        _row(f"heartbeats answered at saturation ({sat.get('nodes')} nodes)",
             f"{sat.get('heartbeats_per_s')} /s (controller CPU "
             f"{sat.get('controller_cpu_pct_of_one_core')} %, simulators "
             f"{sat.get('simulators_cpu_pct_of_one_core')} % of a core)"),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    args = _options()
    cluster = None
    if args.postgres:
        cluster = PostgresCluster(durable=True)
        cluster.start()
        args.database_url = cluster.create_database("fleet")
    try:
        run(args)
    finally:
        if cluster is not None:
            cluster.stop()


def run(args: argparse.Namespace) -> None:
    database = "SQLite"
    if args.database_url:
        database = re.sub(r"\+.*", "", args.database_url.split(":", 1)[0])
        database = "PostgreSQL" if database.startswith("postgresql") else database
    stem = args.stem or f"fleet_scale_{database.lower()}_{args.replicas}r_{args.nodes}"
    command = shlex.join(["python", "benchmarks/fleet_scale.py", *sys.argv[1:]])
    bench = Bench(args)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes it started
    try:
        bench.start_controllers()
        bench.enrol()
        bench.steady()
        bench.converge()
        bench.rollout()
        bench.saturate()
    except (Exception, SystemExit) as exc:  # what was measured is still written
        bench.figures["aborted"] = f"{type(exc).__name__}: {exc}"
    finally:
        bench.close()
    result = {
        "benchmark": "fleet_scale",
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "simulator_command": getattr(bench, "sim_command", ""),
        "machine": _machine(load_before),
        "config": {
            "nodes": args.nodes,
            "heartbeat_s": args.heartbeat_s,
            "steady_s": args.steady_s,
            "operator_interval_s": args.operator_interval_s,
            "database": database,
            "replicas": args.replicas,
            "saturation_nodes": args.saturation_nodes,
            "saturation_heartbeat_s": args.saturation_heartbeat_s,
        },
        "figures": bench.figures,
        "notes": bench.notes,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out_dir / f"{stem}.md").write_text(text)
    print(text)
    print(f"wrote {args.out_dir / stem}.json and .md")


if __name__ == "__main__":
    main()
