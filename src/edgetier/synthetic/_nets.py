"""The torch networks behind the shipped pipeline models (imported only when training).

`TinyDetector` is a single-stage, anchor-free detector (FCOS-style assignment, YOLOv8-style
output): a plain conv backbone to stride 32, a two-level top-down neck, and 1x1 heads at
strides 8 and 16. In export mode it returns [N, 4 + C, A]: (cx, cy, w, h) in input pixels
then C sigmoid scores, anchors of stride 8 first, so any YOLOv8 decoder reads it.
`ColourNet` is a small classifier over 64x64 crops that returns softmax probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDES = (8, 16)


def _conv(c_in: int, c_out: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.SiLU(inplace=True),
    )


class TinyDetector(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 24, 40, 64, 96)) -> None:
        super().__init__()
        a, b, c, d, e = widths
        self.num_classes = num_classes
        self.stem = nn.Sequential(_conv(3, a, 2), _conv(a, b, 2), _conv(b, c, 2))
        self.down4 = nn.Sequential(_conv(c, d, 2), _conv(d, d))
        self.down5 = nn.Sequential(_conv(d, e, 2), _conv(e, e))
        self.lat5 = _conv(e, d, k=1)
        self.fuse4 = _conv(d, d)
        self.lat4 = _conv(d, c, k=1)
        self.fuse3 = _conv(c, c)
        self.head3 = nn.Conv2d(c, 4 + num_classes, 1)
        self.head4 = nn.Conv2d(d, 4 + num_classes, 1)
        for head in (self.head3, self.head4):
            bias = head.bias
            assert bias is not None
            nn.init.constant_(bias[4:], -4.6)  # class prior 0.01: calm early training
            nn.init.zeros_(bias[:4])
        self.export_mode = False

    def raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per level [N, 4 + C, h, w]: ltrb logits then class logits."""
        p3 = self.stem(x)
        p4 = self.down4(p3)
        p5 = self.down5(p4)
        p4 = self.fuse4(p4 + F.interpolate(self.lat5(p5), size=p4.shape[-2:], mode="nearest"))
        p3 = self.fuse3(p3 + F.interpolate(self.lat4(p4), size=p3.shape[-2:], mode="nearest"))
        return [self.head3(p3), self.head4(p4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        levels = self.raw(x)
        if not self.export_mode:
            return levels
        return decode_levels(levels)


def grid_points(levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres [A, 2] in input pixels and the stride [A] of each cell."""
    pts, strides = [], []
    for level, s in zip(levels, STRIDES, strict=True):
        h, w = level.shape[-2:]
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1))
        strides.append(torch.full((h * w,), float(s)))
    return torch.cat(pts), torch.cat(strides)


def flatten(levels: list[torch.Tensor]) -> torch.Tensor:
    """[N, 4 + C, A] raw outputs of all levels, stride 8 first."""
    return torch.cat([lv.flatten(2) for lv in levels], dim=2)


def ltrb_of(raw: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Distances to the box sides, in pixels, from raw [N, 4 + C, A] -> [N, A, 4]."""
    return F.softplus(raw[:, :4].transpose(1, 2)) * strides[None, :, None]


def decode_levels(levels: list[torch.Tensor]) -> torch.Tensor:
    points, strides = grid_points(levels)
    raw = flatten(levels)
    ltrb = ltrb_of(raw, strides)  # [N, A, 4]
    cx = points[None, :, 0] + (ltrb[..., 2] - ltrb[..., 0]) / 2
    cy = points[None, :, 1] + (ltrb[..., 3] - ltrb[..., 1]) / 2
    w = ltrb[..., 0] + ltrb[..., 2]
    h = ltrb[..., 1] + ltrb[..., 3]
    boxes = torch.stack([cx, cy, w, h], dim=1)  # [N, 4, A]
    return torch.cat([boxes, torch.sigmoid(raw[:, 4:])], dim=1)


class ColourNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv(3, 16, 2), _conv(16, 32, 2), _conv(32, 48, 2), _conv(48, 64)
        )
        self.fc = nn.Linear(64, num_classes)
        self.export_mode = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.features(x).mean(dim=(2, 3)))
        return torch.softmax(logits, dim=1) if self.export_mode else logits
