"""Report outputs: JSON, a Markdown table and PNG plots (matplotlib, headless).

Estimated energy is written "estimated" in every table cell and plot label where it
appears; measured energy names its sensor.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgetier.bench._schema import BenchReport, BenchResult

__all__ = ["raw_baselines", "render_markdown", "render_plots", "write_outputs"]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _energy_cell(r: BenchResult) -> str:
    if r.energy_j_per_inference is None:
        return "–"
    tag = "estimated" if r.energy_estimated else "measured"
    return f"{r.energy_j_per_inference:.4g} ({tag}, {r.energy_source})"


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f}"


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def raw_baselines(results: Sequence[BenchResult]) -> dict[int, BenchResult]:
    """Per batch size, the raw ONNX Runtime result at its best throughput."""
    best: dict[int, BenchResult] = {}
    for r in results:
        if r.system != "onnxruntime":
            continue
        if r.batch_size not in best or r.throughput_per_s > best[r.batch_size].throughput_per_s:
            best[r.batch_size] = r
    return best


def _raw_c1(results: Sequence[BenchResult]) -> dict[int, BenchResult]:
    return {
        r.batch_size: r for r in results if r.system == "onnxruntime" and (r.concurrency or 1) == 1
    }


def paired_ratio(result: BenchResult, base: BenchResult) -> float | None:
    """Throughput of ``result`` over ``base``: the median of per-round ratios when both
    recorded the same rounds (pairs that ran close in time, so slow drifts of a noisy
    machine cancel), else the ratio of the medians."""
    mine, theirs = result.round_throughput_per_s, base.round_throughput_per_s
    if mine and theirs and len(mine) == len(theirs) and all(theirs):
        return float(statistics.median(a / b for a, b in zip(mine, theirs, strict=True)))
    return result.throughput_per_s / base.throughput_per_s if base.throughput_per_s else None


def paired_p50_difference_ms(result: BenchResult, base: BenchResult) -> float:
    """p50 of ``result`` minus p50 of ``base``, paired by round where both recorded rounds."""
    mine, theirs = result.round_p50_ms, base.round_p50_ms
    if mine and theirs and len(mine) == len(theirs):
        return float(statistics.median(a - b for a, b in zip(mine, theirs, strict=True)))
    return result.latency_ms.p50 - base.latency_ms.p50


def render_markdown(report: BenchReport, *, title: str | None = None) -> str:
    """A Markdown section: what ran, where and when, then one table of results."""
    hw = report.hardware
    lines = [f"### {title or _title(report)}", ""]
    lines.append(
        f"Machine: {hw.get('cpu', '?')}, {hw.get('cores', '?')} cores, "
        f"{_mib(int(str(hw['memory_bytes']))) if hw.get('memory_bytes') else '?'} MiB, "
        f"GPUs: {', '.join(str(g) for g in _list(hw.get('gpus'))) or 'none'} · "
        f"date {report.date} · "
        f"onnxruntime {report.versions.get('onnxruntime', '?')}"
    )
    lines += ["", f"Command: `{report.command}`", ""]
    with_ratio = any(r.system != "onnxruntime" for r in report.results) and bool(
        raw_baselines(report.results)
    )
    head = [
        "system",
        "protocol",
        "tensors",
        "provider",
        "precision",
        "batch",
        "concurrency",
        "offered/s",
        "throughput/s",
    ]
    if with_ratio:
        head += ["× raw", "+p50 vs raw ms"]
    head += [
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "client CPU %",
        "CPU %",
        "peak MiB",
        "J/inference",
        "repeats",
        "spread %",
    ]
    if report.kind == "pipeline":
        head += ["per-stream FPS", "drops"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    best, c1 = raw_baselines(report.results), _raw_c1(report.results)
    for r in report.results:
        row = [
            r.system,
            r.protocol or "–",
            r.tensors or "–",
            r.provider,
            r.precision,
            str(r.batch_size),
            str(r.concurrency or "–"),
            _fmt(r.offered_rate_per_s, 1),
            _fmt(r.throughput_per_s, 1),
        ]
        if with_ratio:
            base = best.get(r.batch_size)
            row.append(_fmt(paired_ratio(r, base), 2) if base else "–")
            b1 = c1.get(r.batch_size)
            row.append(
                _fmt(paired_p50_difference_ms(r, b1), 3)
                if b1 and (r.concurrency or 1) == 1 and r.offered_rate_per_s is None
                else "–"
            )
        lm = r.latency_ms
        row += [
            _fmt(lm.p50, 3),
            _fmt(lm.p90, 3),
            _fmt(lm.p99, 3),
            _fmt(lm.max, 3),
            _fmt(r.client_cpu_percent, 0),
            _fmt(r.cpu_percent, 0),
            _mib(r.peak_memory_bytes),
            _energy_cell(r),
            str(r.repeats),
            _fmt(r.spread_pct, 1),
        ]
        if report.kind == "pipeline":
            row += [
                ", ".join(f"{v:.1f}" for v in r.per_stream_fps or []) or "–",
                str(r.drops if r.drops is not None else "–"),
            ]
        lines.append("| " + " | ".join(row) + " |")
    if with_ratio:
        lines += [
            "",
            "× raw: throughput over raw ONNX Runtime's best at the same batch size; "
            "+p50 vs raw: p50 minus raw ONNX Runtime's p50 at concurrency 1. Where the "
            "systems ran in rounds (bench compare), both are medians of per-round figures, "
            "each round pairing runs made close in time.",
        ]
    if any(r.energy_estimated for r in report.results):
        lines += [
            "",
            "Energy marked *estimated* comes from the device profile (TDP × "
            "utilisation), not from a sensor.",
        ]
    if report.notes:
        lines += ["", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"


def _title(report: BenchReport) -> str:
    model = report.model.name if report.model else "pipeline"
    return f"{report.kind}: {model}"


def _series_key(r: BenchResult) -> str:
    parts = [r.system, r.protocol or "", r.tensors or "", f"b{r.batch_size}"]
    return " ".join(p for p in parts if p)


def render_plots(report: BenchReport, out_dir: Path, stem: str) -> list[Path]:
    """PNG plots that the results support: throughput vs concurrency, latency vs offered
    rate, energy per inference. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    closed: dict[str, list[BenchResult]] = defaultdict(list)
    opened: dict[str, list[BenchResult]] = defaultdict(list)
    for r in report.results:
        if r.offered_rate_per_s is not None:
            opened[_series_key(r)].append(r)
        elif r.concurrency is not None:
            closed[_series_key(r)].append(r)
    model = report.model.name if report.model else report.kind
    if any(len(v) > 1 for v in closed.values()):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for key, rs in sorted(closed.items()):
            rs.sort(key=lambda r: r.concurrency or 0)
            ax.plot(
                [r.concurrency or 0 for r in rs],
                [r.throughput_per_s for r in rs],
                marker="o",
                label=key,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel("throughput (inferences/s)")
        ax.set_title(f"{model}: throughput vs concurrency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / f"{stem}-throughput.png"))
    if opened:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for key, rs in sorted(opened.items()):
            rs.sort(key=lambda r: r.offered_rate_per_s or 0)
            rates = [r.offered_rate_per_s or 0.0 for r in rs]
            line = ax.plot(rates, [r.latency_ms.p50 for r in rs], marker="o", label=f"{key} p50")
            ax.plot(
                rates,
                [r.latency_ms.p99 for r in rs],
                marker="x",
                linestyle="--",
                color=line[0].get_color(),
                label=f"{key} p99",
            )
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (requests/s, Poisson)")
        ax.set_ylabel("latency from scheduled send (ms)")
        ax.set_title(f"{model}: latency vs offered rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / f"{stem}-latency.png"))
    with_energy = [r for r in report.results if r.energy_j_per_inference is not None]
    if with_energy:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        labels = []
        for i, r in enumerate(with_energy):
            tag = "estimated" if r.energy_estimated else "measured"
            ax.bar(
                i,
                r.energy_j_per_inference or 0.0,
                hatch="//" if r.energy_estimated else "",
                color="tab:orange" if r.energy_estimated else "tab:blue",
            )
            if r.concurrency:
                where = f"c{r.concurrency}"
            elif r.offered_rate_per_s is not None:
                where = f"{r.offered_rate_per_s:g}/s"
            else:
                where = f"b{r.batch_size}"
            labels.append(f"{_series_key(r)} {where}\n{tag}")
        ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=30, ha="right")
        ax.set_ylabel("energy per inference (J)")
        sources = sorted(
            {
                f"{r.energy_source} ({'estimated' if r.energy_estimated else 'measured'})"
                for r in with_energy
            }
        )
        ax.set_title(f"{model}: energy per inference — {', '.join(sources)}", fontsize=9)
        written.append(_save(fig, out_dir / f"{stem}-energy.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(report: BenchReport, base: Path, *, plots: bool = True) -> list[Path]:
    """``base``.json, ``base``.md and ``base``-*.png; returns every file written."""
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path = report.write(base.with_suffix(".json"))
    md_path = base.with_suffix(".md")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    files = [json_path, md_path]
    if plots:
        files += render_plots(report, base.parent, base.name)
    return files
