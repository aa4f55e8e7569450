"""The benchmark JSON (schema ``edgetier.bench/1``) as pydantic models.

Every ``edgetier bench`` command writes one :class:`BenchReport`; docs generation and the
hardware advisor read the same files back (the advisor as plain JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA",
    "BenchKind",
    "BenchReport",
    "BenchResult",
    "LatencyMs",
    "ModelInfo",
    "Precision",
    "Protocol",
    "TensorEncoding",
]

SCHEMA = "edgetier.bench/1"
BenchKind = Literal["model", "server", "pipeline", "compare"]
Protocol = Literal["grpc", "http"]
TensorEncoding = Literal["json", "binary", "shm"]
Precision = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyMs(_Strict):
    """Latency percentiles of one measurement, in milliseconds."""

    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float | None = Field(
        default=None, description="null where the tool gives no max (perf_analyzer)"
    )


class ModelInfo(_Strict):
    """The model that was measured."""

    name: str
    sha256: str
    flops_per_inference: float | None = None


class BenchResult(_Strict):
    """One measured configuration (system x protocol x batch x load), medians over repeats."""

    system: str
    protocol: Protocol | None = None
    tensors: TensorEncoding | None = None
    provider: str
    precision: Precision = "fp32"
    batch_size: int = Field(ge=1)
    concurrency: int | None = Field(default=None, ge=1)
    offered_rate_per_s: float | None = Field(default=None, gt=0)
    throughput_per_s: float = Field(ge=0, description="inferences (samples) per second")
    latency_ms: LatencyMs
    cpu_percent: float | None = None
    client_cpu_percent: float | None = None
    gpu_util_percent: float | None = None
    peak_memory_bytes: int | None = None
    energy_j_per_inference: float | None = None
    energy_source: str | None = None
    energy_estimated: bool = False
    repeats: int = Field(default=1, ge=1)
    spread_pct: float = Field(default=0.0, ge=0)
    # Each repeat's own figures, in the order they ran. Compare runs its repeats as
    # rounds over all systems, so round i of one system pairs with round i of another.
    round_throughput_per_s: list[float] | None = None
    round_p50_ms: list[float] | None = None
    requests: int = Field(default=0, ge=0, description="requests completed in the window")
    errors: int = Field(default=0, ge=0, description="requests that failed in the window")
    # Pipeline runs only: frames per second of each stream and frames dropped.
    per_stream_fps: list[float] | None = None
    drops: int | None = None


class BenchReport(_Strict):
    """One benchmark run: what ran, where, when, and the results."""

    schema_: str = Field(default=SCHEMA, alias="schema")
    kind: BenchKind
    date: str
    command: str
    versions: dict[str, str]
    hardware: dict[str, object]
    model: ModelInfo | None
    results: list[BenchResult]
    notes: list[str] = Field(default_factory=list)
    settings: dict[str, object] = Field(
        default_factory=dict,
        description="what every compared system was given (bench compare): each value with "
        "where it came from (option, config.yaml, server default, bench default)",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        """The report as indented JSON with the ``schema`` key spelt as in the files."""
        return self.model_dump_json(by_alias=True, indent=2)

    def write(self, path: Path) -> Path:
        """Write the report to ``path`` (parent folders created) and return the path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> BenchReport:
        """Load and validate a report written by :meth:`write`."""
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
