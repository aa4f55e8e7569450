"""The shape of a pipeline as text or Graphviz dot: sources -> stages -> sinks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgetier.pipeline._config import PipelineConfig


def _source_label(src: Any) -> str:
    details: dict[str, Callable[[Any], str]] = {
        "file": lambda s: s.path,
        "rtsp": lambda s: s.url,
        "http": lambda s: s.url,
        "v4l2": lambda s: s.device,
        "images": lambda s: f"{s.path}/{s.pattern}",
        "synthetic": lambda s: f"{s.count} stream(s), seed {s.seed}",
    }
    detail = details[src.kind](src)
    extra = f", fps<={src.fps_cap:g}" if src.fps_cap else ""
    return f"{src.id} [{src.kind}: {detail}; {src.policy()}{extra}]"


def _stage_label(stage: Any) -> str:
    if stage.kind in ("detector", "classifier"):
        return f"{stage.id} [{stage.kind}: {stage.model}, batch<={stage.max_batch_size}]"
    if stage.kind == "cascade":
        return (
            f"{stage.id} [cascade: {stage.model} on {','.join(stage.on_classes)} -> {stage.field}]"
        )
    if stage.kind == "analytics":
        parts = [f"{len(stage.lines)} line(s)", f"{len(stage.zones)} zone(s)"]
        if stage.pixels_per_metre:
            parts.append("speed")
        return f"{stage.id} [analytics: {', '.join(parts)}]"
    if stage.kind == "python":
        return f"{stage.id} [python: {stage.target}]"
    return f"{stage.id} [{stage.kind}]"


def _sink_label(sink: Any) -> str:
    details: dict[str, Callable[[Any], str]] = {
        "mqtt": lambda s: f"{s.host}:{s.port}",
        "opcua": lambda s: s.endpoint,
        "webhook": lambda s: s.url,
        "jsonl": lambda s: s.path,
        "video": lambda s: s.path,
        "prometheus": lambda s: f"{s.host}:{s.port}",
    }
    detail = details[sink.kind](sink)
    return f"{sink.id or sink.kind} [{sink.kind}: {detail}]"


def graph_text(config: PipelineConfig) -> str:
    lines = [f"pipeline {config.name}", "sources:"]
    lines += [f"  {_source_label(s)}" for s in config.sources]
    lines.append("stages (in order, frames of all streams batched per model):")
    lines += [f"  -> {_stage_label(s)}" for s in config.stages] or ["  (none)"]
    lines.append("sinks:")
    lines += [f"  => {_sink_label(s)}" for s in config.sinks] or ["  (none)"]
    return "\n".join(lines)


def graph_dot(config: PipelineConfig) -> str:
    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = [f"digraph {q(config.name)} {{", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for src in config.sources:
        out.append(f"  {q('src:' + src.id)} [shape=box, label={q(_source_label(src))}];")
    for stage in config.stages:
        out.append(f"  {q('stage:' + stage.id)} [shape=ellipse, label={q(_stage_label(stage))}];")
    for sink in config.sinks:
        name = sink.id or sink.kind
        out.append(f"  {q('sink:' + name)} [shape=cylinder, label={q(_sink_label(sink))}];")
    first = f"stage:{config.stages[0].id}" if config.stages else None
    last = f"stage:{config.stages[-1].id}" if config.stages else None
    for s in config.sources:
        if first:
            out.append(f"  {q('src:' + s.id)} -> {q(first)};")
        else:
            out += [
                f"  {q('src:' + s.id)} -> {q('sink:' + (k.id or k.kind))};" for k in config.sinks
            ]
    for a, b in zip(config.stages, config.stages[1:], strict=False):
        out.append(f"  {q('stage:' + a.id)} -> {q('stage:' + b.id)};")
    if last:
        out += [f"  {q(last)} -> {q('sink:' + (k.id or k.kind))};" for k in config.sinks]
    out.append("}")
    return "\n".join(out)
