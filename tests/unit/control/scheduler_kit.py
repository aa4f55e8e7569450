"""Builders for the scheduler tests: nodes, deployments, models, and YOLOv8n's real cost.

``yolov8n()`` builds the YOLOv8n architecture (Ultralytics' yolov8n.yaml: width 0.25,
depth 0.33, 80 classes, 640 x 640, the export graph's decode included) in torch with random
weights, exports it to ONNX and counts it with ``edgetier.hardware.model_cost``, as the
controller does for a pushed model: 3,151,904 parameters and about 8.8 GFLOPs, the figures
Ultralytics publishes (3.2 M, 8.7 GFLOPs). Nothing is downloaded.
"""

from __future__ import annotations

import tempfile
import warnings
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from edgetier.control import (
    Condition,
    Decision,
    Deployment,
    DeploymentSpec,
    ModelVersionInfo,
    Node,
    NodeSpec,
    NodeStatus,
    PlacedLoad,
    TelemetrySummary,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)
DIGEST = "sha256:" + "0" * 64


def node(
    name: str,
    profile: str = "jetson-xavier-nx",
    tier: str = "edge",
    *,
    labels: dict[str, str] | None = None,
    capacity: dict[str, float] | None = None,
    unschedulable: bool = False,
    conditions: list[Condition] | None = None,
    heartbeat: bool = True,
    temperature_c: float | None = None,
    memory_used_bytes: int | None = None,
    load: dict[str, PlacedLoad] | None = None,
) -> Node:
    return Node(
        metadata={"name": name, "labels": labels or {}},
        spec=NodeSpec(
            tier=tier,  # type: ignore[arg-type]
            profile=profile,
            capacity=capacity or {},
            unschedulable=unschedulable,
        ),
        status=NodeStatus(
            conditions=conditions or [],
            last_heartbeat=NOW if heartbeat else None,
            telemetry=TelemetrySummary(
                temperature_c=temperature_c, memory_used_bytes=memory_used_bytes
            ),
            placements=sorted(load or {}),
            load=load or {},
        ),
    )


def pipeline(
    name: str = "traffic", *, streams: int = 1, fps: float = 30, **spec: Any
) -> Deployment:
    return Deployment(
        metadata={"name": name},
        spec=DeploymentSpec(
            pipeline={"name": "traffic-synthetic", "model": {"name": "detector"}},
            streams=streams,
            fps=fps,
            **spec,
        ),
    )


def served(name: str = "classify", *, replicas: int = 1, **spec: Any) -> Deployment:
    return Deployment(
        metadata={"name": name},
        spec=DeploymentSpec(model={"name": "detector"}, replicas=replicas, **spec),
    )


def model(
    *,
    flops: float | None = 8.79e9,
    weight_bytes: int | None = 12_708_416,
    activation_bytes: int | None = 484_729_600,
    size_bytes: int = 12_900_000,
    throughput: dict[str, float] | None = None,
) -> ModelVersionInfo:
    """A model version with the given cost (defaults: YOLOv8n's, see ``yolov8n()``)."""
    return ModelVersionInfo(
        model="detector",
        version=1,
        digest=DIGEST,
        size_bytes=size_bytes,
        flops=flops,
        weight_bytes=weight_bytes,
        activation_bytes=activation_bytes,
        throughput=throughput or {},
    )


def applied(decision: Decision, deployment: Deployment, nodes: list[Node]) -> list[Node]:
    """The nodes as the controller writes them after a decision: each placement's load."""
    out = []
    for n in nodes:
        load = {k: v for k, v in n.status.load.items() if k != deployment.name}
        for p in decision.placements:
            if p.node == n.name:
                load[deployment.name] = PlacedLoad(share=p.share, streams=p.streams)
        status = n.status.model_copy(update={"load": load, "placements": sorted(load)})
        out.append(n.model_copy(update={"status": status}))
    return out


@cache
def yolov8n() -> ModelVersionInfo:
    """YOLOv8n at 640 as the controller would record it at push time (cost from its graph)."""
    import torch

    from edgetier.hardware import model_cost

    net = _yolov8n_net(torch).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yolov8n.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own deprecation notices
            torch.onnx.export(
                net,
                (torch.zeros(1, 3, 640, 640),),
                str(path),
                input_names=["images"],
                output_names=["output0"],
                opset_version=18,
                dynamo=False,
            )
        cost = model_cost(path)
        size = path.stat().st_size
    return model(
        flops=cost.flops,
        weight_bytes=cost.weight_bytes,
        activation_bytes=cost.activation_bytes,
        size_bytes=size,
    ).model_copy(update={"model": "yolov8n"})


def _yolov8n_net(torch: Any) -> Any:
    """Ultralytics' YOLOv8n layer for layer (BatchNorm folded into the convolutions, as the
    exported graph has it); random weights."""
    nn = torch.nn

    def conv(c1: int, c2: int, k: int = 1, s: int = 1) -> Any:
        return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2), nn.SiLU())

    class Bottleneck(nn.Module):  # type: ignore[misc]
        def __init__(self, c: int, shortcut: bool) -> None:
            super().__init__()
            self.cv1, self.cv2, self.add = conv(c, c, 3), conv(c, c, 3), shortcut

        def forward(self, x: Any) -> Any:
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C2f(nn.Module):  # type: ignore[misc]
        def __init__(self, c1: int, c2: int, n: int, shortcut: bool) -> None:
            super().__init__()
            self.c = c2 // 2
            self.cv1, self.cv2 = conv(c1, 2 * self.c), conv((2 + n) * self.c, c2)
            self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

        def forward(self, x: Any) -> Any:
            y = list(self.cv1(x).split((self.c, self.c), 1))
            for m in self.m:
                y.append(m(y[-1]))
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):  # type: ignore[misc]
        def __init__(self, c1: int, c2: int) -> None:
            super().__init__()
            self.cv1, self.cv2 = conv(c1, c1 // 2), conv(2 * c1, c2)
            self.m = nn.MaxPool2d(5, 1, 2)

        def forward(self, x: Any) -> Any:
            y = [self.cv1(x)]
            for _ in range(3):
                y.append(self.m(y[-1]))
            return self.cv2(torch.cat(y, 1))

    class Detect(nn.Module):  # type: ignore[misc]
        def __init__(self, nc: int, ch: tuple[int, ...], size: int) -> None:
            super().__init__()
            self.nc = nc
            c2, c3 = max(16, ch[0] // 4, 64), max(ch[0], min(nc, 100))
            self.cv2 = nn.ModuleList(
                nn.Sequential(conv(x, c2, 3), conv(c2, c2, 3), nn.Conv2d(c2, 64, 1)) for x in ch
            )
            self.cv3 = nn.ModuleList(
                nn.Sequential(conv(x, c3, 3), conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch
            )
            self.dfl = nn.Conv2d(16, 1, 1, bias=False)
            self.dfl.weight.data[:] = torch.arange(16.0).view(1, 16, 1, 1)
            points, strides = [], []
            for s in (8, 16, 32):
                n = size // s
                yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
                points.append(torch.stack((xx, yy), -1).view(-1, 2))
                strides.append(torch.full((n * n, 1), float(s)))
            self.register_buffer("anchors", torch.cat(points).T.unsqueeze(0))
            self.register_buffer("strides", torch.cat(strides).T.unsqueeze(0))

        def forward(self, xs: list[Any]) -> Any:
            b = xs[0].shape[0]
            out = torch.cat(
                [
                    torch.cat((self.cv2[i](x), self.cv3[i](x)), 1).view(b, 64 + self.nc, -1)
                    for i, x in enumerate(xs)
                ],
                2,
            )
            box, cls = out.split((64, self.nc), 1)
            a = out.shape[2]
            d = self.dfl(box.view(b, 4, 16, a).transpose(2, 1).softmax(1)).view(b, 4, a)
            lt, rb = d.split((2, 2), 1)
            x1y1, x2y2 = self.anchors - lt, self.anchors + rb
            xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
            return torch.cat((xywh, cls.sigmoid()), 1)

    class YOLOv8n(nn.Module):  # type: ignore[misc]
        def __init__(self, nc: int = 80, size: int = 640) -> None:
            super().__init__()
            self.b0, self.b1, self.b2 = conv(3, 16, 3, 2), conv(16, 32, 3, 2), C2f(32, 32, 1, True)
            self.b3, self.b4 = conv(32, 64, 3, 2), C2f(64, 64, 2, True)
            self.b5, self.b6 = conv(64, 128, 3, 2), C2f(128, 128, 2, True)
            self.b7, self.b8 = conv(128, 256, 3, 2), C2f(256, 256, 1, True)
            self.b9 = SPPF(256, 256)
            self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
            self.h12, self.h15 = C2f(384, 128, 1, False), C2f(192, 64, 1, False)
            self.h16, self.h18 = conv(64, 64, 3, 2), C2f(192, 128, 1, False)
            self.h19, self.h21 = conv(128, 128, 3, 2), C2f(384, 256, 1, False)
            self.detect = Detect(nc, (64, 128, 256), size)

        def forward(self, x: Any) -> Any:
            p4 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
            p6 = self.b6(self.b5(p4))
            p9 = self.b9(self.b8(self.b7(p6)))
            h12 = self.h12(torch.cat((self.up(p9), p6), 1))
            h15 = self.h15(torch.cat((self.up(h12), p4), 1))
            h18 = self.h18(torch.cat((self.h16(h15), h12), 1))
            h21 = self.h21(torch.cat((self.h19(h18), p9), 1))
            return self.detect([h15, h18, h21])

    return YOLOv8n()
