"""The files the agent writes for its children, from an assignment: a model's config.yaml
in the local model repository, and a pipeline file placed under the agent's store.

Pure functions of their inputs, so that a reconcile can compare what is on disk with what
should be and write only on a difference::

    text = model_config_text("detector", {"max_batch_size": 8}, versions=[2])
    data, ports = render_pipeline(assignment.pipeline, node="edge-1", streams=4,
                                  workdir=store / "pipelines" / "traffic", ports=[9010, ...])
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from edgetier.agent._files import PACKAGE_SCHEME
from edgetier.errors import ConfigError

__all__ = ["MODEL_FILENAMES", "model_config_text", "model_filename", "render_pipeline"]

MODEL_FILENAMES = {"onnxruntime_onnx": "model.onnx", "litert_tflite": "model.tflite"}
"""The file a version directory holds for each platform (as the server's engines expect)."""

_OPCUA_ENDPOINT = re.compile(r"^(?P<scheme>opc\.tcp://)(?P<host>[^:/]+)(?::\d+)?(?P<path>/.*)?$")


def model_filename(platform: str, config: dict[str, Any]) -> str:
    """The model file's name inside ``<model>/<version>/``."""
    given = config.get("default_model_filename")
    if isinstance(given, str) and given and "/" not in given and not given.startswith("."):
        return given
    return MODEL_FILENAMES.get(platform, "model.onnx")


def model_config_text(model: str, config: dict[str, Any], *, versions: list[int]) -> str:
    """config.yaml for ``model``: the assignment's config, named after the model and
    serving exactly the versions the node should serve (the agent decides what is on
    disk, so it also decides the version policy)."""
    data = dict(config)
    data["name"] = model
    data["version_policy"] = {"specific": {"versions": sorted(set(versions))}}
    return str(yaml.safe_dump(data, sort_keys=True))


def render_pipeline(
    pipeline: dict[str, Any],
    *,
    node: str,
    streams: int,
    workdir: Path,
    ports: list[int],
    models: dict[str, Path] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The pipeline file this node runs, and where its listening sinks listen
    (``{sink: "host:port"}``).

    - ``node`` is set to the agent's node, so MQTT topics and client ids name this node;
    - the ``synthetic`` sources carry ``streams`` streams between them (when above 0);
    - output files (``jsonl``, ``video`` paths) and the MQTT outbox land under
      ``workdir``; a relative path stays relative to it, an absolute one keeps its name;
    - listening sinks (``prometheus``, ``opcua``) take their ports from ``ports``, so
      that agents on one host never collide;
    - a model stage whose ``model`` is ``package://NAME`` or ``NAME`` of a model in
      ``models`` runs the downloaded file instead.
    """
    if not isinstance(pipeline, dict):
        raise ConfigError(f"assignment pipeline: must be a mapping, got {type(pipeline).__name__}")
    data = copy.deepcopy(pipeline)
    data["node"] = node
    _spread_streams(data, streams)
    free = list(ports)
    endpoints: dict[str, str] = {}
    sinks = data.get("sinks") or []
    for i, sink in enumerate(sinks):
        if not isinstance(sink, dict):
            continue
        name = str(sink.get("id") or f"{sink.get('kind')}-{i}")
        kind = sink.get("kind")
        if kind in ("jsonl", "video") and isinstance(sink.get("path"), str):
            sink["path"] = str(_under(workdir, sink["path"]))
        elif kind == "mqtt" and isinstance(sink.get("outbox"), str):
            sink["outbox"] = str(workdir / "state" / Path(sink["outbox"]).name)
        elif kind == "prometheus":
            port = _take(free, name)
            sink["port"] = port
            endpoints[name] = f"{sink.get('host', '127.0.0.1')}:{port}"
        elif kind == "opcua":
            endpoint = sink.get("endpoint", "opc.tcp://127.0.0.1:4840/edgetier/")
            match = _OPCUA_ENDPOINT.match(str(endpoint))
            if match is None:
                raise ConfigError(f"sinks[{i}].endpoint: not an opc.tcp:// URL, got {endpoint!r}")
            port = _take(free, name)
            sink["endpoint"] = f"opc.tcp://{match['host']}:{port}{match['path'] or '/'}"
            endpoints[name] = f"{match['host']}:{port}"
    for stage in data.get("stages") or []:
        if isinstance(stage, dict) and isinstance(stage.get("model"), str):
            ref = stage["model"].removeprefix(PACKAGE_SCHEME)
            if models and ref in models:
                stage["model"] = str(models[ref])
    return data, endpoints


def _spread_streams(data: dict[str, Any], streams: int) -> None:
    """Give the synthetic sources ``streams`` streams, as evenly as they go; a synthetic
    source left with none is dropped (other sources stay as they are)."""
    sources = data.get("sources")
    if streams <= 0 or not isinstance(sources, list):
        return
    synthetic = [s for s in sources if isinstance(s, dict) and s.get("kind") == "synthetic"]
    if not synthetic:
        return
    share, extra = divmod(streams, len(synthetic))
    for i, source in enumerate(synthetic):
        count = share + (1 if i < extra else 0)
        if count:
            source["count"] = count
        else:
            sources.remove(source)


def _under(workdir: Path, path: str) -> Path:
    given = Path(path)
    if given.is_absolute() or ".." in given.parts:
        return workdir / "out" / given.name
    return workdir / given


def _take(free: list[int], sink: str) -> int:
    if not free:
        raise ConfigError(f"sink {sink!r}: no port left in this pipeline's share of the port plan")
    return free.pop(0)
