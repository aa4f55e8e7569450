"""Regenerate docs/benchmarks.md and its plots from the JSON files under benchmarks/results/.

Each ``<stem>.json`` becomes a section (known stems get a title and a sentence saying what
they show) with its table and plots; the page states machine, date and command per section.
"""

from __future__ import annotations

from pathlib import Path

from edgetier.bench._report import render_markdown, render_plots
from edgetier.bench._schema import SCHEMA, BenchReport

__all__ = ["build_docs"]

_SECTIONS: dict[str, tuple[str, str]] = {
    "compare_resnet50": (
        "ResNet-50: EdgeTier, PyTriton and Ray Serve against raw ONNX Runtime",
        "Each system started by `edgetier bench compare` in its own process, one after the "
        "other, with the same ONNX Runtime threads, max batch size and queue delay.",
    ),
    "compare_resnet50_nospin": (
        "ResNet-50 with ONNX Runtime spinning off for every system, in rounds",
        "The same comparison with `session.intra_op.allow_spinning = 0` in every system, the "
        "raw baseline included (EdgeTier's default). The repeats ran as rounds: each round "
        "measures every system once, in alternating order, and × raw and +p50 are medians of "
        "the per-round figures.",
    ),
    "compare_resnet50_interleaved": (
        "ResNet-50, interleaved: raw ONNX Runtime, EdgeTier and PyTriton taking turns",
        "`bench compare --interleave`: every server up at once and the systems taking turns "
        "point by point, round after round in alternating order, so the machine's drift hits "
        "each alike (runs made one after the other, as above, differ by more than the servers "
        "do). Ray Serve is left out: its idle daemons would take CPU from whichever system is "
        "measured.",
    ),
    "compare_resnet50_b1c1_interleaved": (
        "ResNet-50 at batch 1, concurrency 1, interleaved in short windows",
        "The latency point alone with `--interleave`, 20 rounds of 1.5 s windows; each "
        "percentile is the median over rounds of that round's percentile, and +p50 the median "
        "of the per-round differences to raw ONNX Runtime.",
    ),
    "compare_resnet50_b8c8_interleaved": (
        "ResNet-50 at batch 8, concurrency 8, interleaved: throughput at saturation",
        "The saturation point alone with `--interleave`, 6 rounds of 12 s windows.",
    ),
    "compare_small": (
        "Small model: the cost of the server path",
        "A tiny MLP, where the model costs almost nothing and what is measured is the serving "
        "path itself.",
    ),
    "server_vs_raw_b1_interleaved": (
        "ResNet-50 at saturation, batch-1 requests: EdgeTier against raw ONNX Runtime, interleaved",
        "Target: server throughput at least 95 % of raw ONNX Runtime's for the same model, "
        "threads and batch size. 10 rounds of 4 s windows, the two systems taking turns; "
        "× raw is the median of the per-round ratios to raw's best point at batch 1.",
    ),
    "server_vs_raw_b8_interleaved": (
        "ResNet-50 at saturation, batch-8 requests: EdgeTier against raw ONNX Runtime, interleaved",
        "The same target at batch 8: 8 rounds of 6 s windows (concurrency 2 keeps one batch "
        "decoding while the other runs).",
    ),
    "server_vs_raw": (
        "ResNet-50 at saturation: EdgeTier server against raw ONNX Runtime",
        "Target: server throughput at least 95 % of raw ONNX Runtime's for the same model, "
        "threads and batch size (gRPC, binary tensors).",
    ),
    "added_latency": (
        "Added latency at batch 1 on a small model (gRPC and HTTP)",
        "Target: server p50 minus raw engine p50 under 1 ms over gRPC.",
    ),
    "grpc_client_latency": (
        "Added gRPC latency by client, and the floor of a gRPC round trip",
        "The same target with four of tritonclient's gRPC clients (sync and asyncio, unary and "
        "streaming), interleaved with the raw engine, and each client against a gRPC service "
        "that answers at once (`benchmarks/_null_grpc.py`): that floor is what the transport "
        "and the Python client cost here whatever the server; EdgeTier minus the floor is the "
        "server's own share.",
    ),
    "fixed_cost": (
        "The fixed cost per request by transport, on a model that costs nothing",
        "`benchmarks/fixed_cost.py`: the small demo model at batch 1, one request at a time, "
        "through raw ONNX Runtime, in-process batching and the server over each transport, "
        "in rounds; +p50 vs raw is the fixed cost per request. What to make of it: "
        "docs/choosing-a-path.md.",
    ),
    "fixed_cost_frame": (
        "The fixed cost per request with a 588 KiB tensor: when shared memory pays",
        "The same paths with an Identity graph on one 224x224 RGB frame (FP32), so that "
        "what is measured is moving the tensor.",
    ),
    "pipeline-scaling": (
        "Pipelines: 720p streams with the trained detector, 1 to 16 streams",
        "Decode-only, inference-only, the whole pipeline and per-stream inference for the same "
        "streams, side by side (method and discussion in docs/pipelines.md).",
    ),
    "dynamic_batching": (
        "Dynamic batching on and off at concurrency 8",
        "The same server and model with dynamic batching on and off.",
    ),
    "transports": (
        "HTTP and gRPC, binary tensors and system shared memory",
        "The load generator over both protocols, with and without system shared memory.",
    ),
    "peak_memory": (
        "Peak server memory with the demo repository",
        "Resident memory of the server process (and its children) while it serves every demo "
        "model under load.",
    ),
    "open_loop": (
        "Latency against offered rate (open loop, Poisson arrivals)",
        "Latency measured from each request's scheduled send time, so queueing shows.",
    ),
}

_HEADER = """# Benchmarks

Every figure on this page was measured by `edgetier bench` or a script under
`benchmarks/`, and is regenerated from the JSON files in `benchmarks/results/` with

    make bench-docs

Each section names the machine, the date and the command that produced it. Ratios are
measured side by side in one run; the machine these ran on is small and shared, so read
absolute times as indications and repeat runs on your own hardware (see "Reproduce" below).
Energy marked *estimated* comes from a device profile (TDP × utilisation), never from a
sensor; measured energy names its sensor (NVML, RAPL, Jetson INA3221).
"""

_FOOTER = """## Reproduce

    .venv/bin/python benchmarks/server_vs_raw.py
    .venv/bin/python benchmarks/added_latency.py
    .venv/bin/python benchmarks/dynamic_batching.py
    .venv/bin/python benchmarks/transports.py
    .venv/bin/python benchmarks/peak_memory.py
    .venv/bin/python benchmarks/compare_peers.py   # needs the peers (see below)
    .venv/bin/python benchmarks/grpc_client_latency.py
    .venv/bin/python benchmarks/fixed_cost.py
    make bench-docs

Each section's command reruns its figures alone; the interleaved comparisons are
`edgetier bench compare ... --interleave` runs (their commands are in their sections).
`bench compare` gives every system the model's own settings (its config.yaml, as
`edgetier serve` loads it) and the server's ONNX Runtime session options unless options
override them; each report lists every setting and where it came from. Sections measured
before that (their settings line reads "every system: ONNX Runtime cpu provider, ...") used
the compare defaults of the time: max batch size 8, a 2 ms queue delay, intra-op spinning
as stated.

The peers run from their own environment, because PyTriton 0.7 needs numpy < 2
(`make peers` builds it):

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install 'nvidia-pytriton==0.7.0' 'onnxruntime==1.32.0' 'ray[serve]==2.60.0'
    edgetier bench compare resnet50 --peer-python .venv-peers/bin/python
"""


def build_docs(results_dir: Path, out_md: Path, img_dir: Path) -> list[Path]:
    """Write ``out_md`` and one set of PNGs per result file; returns the files written."""
    # Other figures (e.g. pipeline-quality.json) share the folder: take bench reports only.
    files = [p for p in results_dir.glob("*.json") if f'"{SCHEMA}"' in p.read_text("utf-8")]
    order = {stem: i for i, stem in enumerate(_SECTIONS)}
    files.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    parts = [_HEADER]
    written: list[Path] = []
    for path in files:
        report = BenchReport.read(path)
        title, blurb = _SECTIONS.get(path.stem, (path.stem.replace("_", " "), ""))
        parts.append(f"## {title}\n")
        if blurb:
            parts.append(blurb + "\n")
        parts.append(render_markdown(report, title="Results").replace("### Results\n\n", ""))
        plots = render_plots(report, img_dir, path.stem)
        written += plots
        rel = _relative(img_dir, out_md.parent)
        parts += [f"![{p.stem}]({rel}/{p.name})\n" for p in plots]
        parts.append(f"Source: `benchmarks/results/{path.name}`\n")
    if not files:
        parts.append("No results yet: run the scripts under `benchmarks/`.\n")
    parts.append(_FOOTER)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(parts), encoding="utf-8")
    return [out_md, *written]


def _relative(target: Path, start: Path) -> str:
    try:
        return target.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return target.as_posix()
