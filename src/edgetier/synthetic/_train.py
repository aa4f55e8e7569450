"""Training of the shipped pipeline models on synthetic scenes, on the CPU, with torch.

Two models are made from frames the scene generator draws (fresh frames every step, so
nothing is stored and nothing overfits): the detector (vehicle, pedestrian, plate; ONNX in
the YOLOv8 output layout) and the vehicle-colour classifier for the cascade. Each ONNX file
gets a YAML sidecar (:class:`ModelCard`) with class names, input size and how it was made.

    python -m edgetier.synthetic train --out src/edgetier/pipeline/models
    python -m edgetier.synthetic train --out build/models --tiny  # seconds, for tests

torch is imported inside the functions that need it (`pip install 'edgetier[train]'`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict

from edgetier.errors import ConfigError, MissingExtraError
from edgetier.pipeline import Letterboxer
from edgetier.synthetic._scene import (
    CLASS_NAMES,
    COLOUR_NAMES,
    VEHICLE,
    SceneConfig,
    SyntheticScene,
)

if TYPE_CHECKING:
    import torch

    from edgetier.synthetic._nets import ColourNet, TinyDetector

Progress = Callable[[str], None]
REBUILD_COMMAND = "python -m edgetier.synthetic train --out src/edgetier/pipeline/models"
PAD_VALUE = 114
COLOUR_INPUT = 64


@dataclass(frozen=True)
class TrainConfig:
    """How long and how big; `tiny()` gives a configuration that trains in seconds."""

    detector_steps: int = 500
    batch_size: int = 8
    learning_rate: float = 3e-3
    colour_steps: int = 250
    colour_batch_size: int = 48
    input_hw: tuple[int, int] = (384, 640)
    widths: tuple[int, int, int, int, int] = (16, 24, 40, 64, 96)
    crop_hw: tuple[int, int] | None = (256, 384)  # train on crops of the letterboxed frame
    frames_per_scene: int = 6
    seed: int = 0
    threads: int = 2
    log_every: int = 25

    def __post_init__(self) -> None:
        for name in ("detector_steps", "batch_size", "colour_steps", "colour_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("input_hw", "crop_hw"):
            for side in getattr(self, name) or ():
                if side < 64 or side % 32:
                    raise ConfigError(f"{name} sides must be multiples of 32 >= 64, got {side}")
        if self.crop_hw and any(c > i for c, i in zip(self.crop_hw, self.input_hw, strict=True)):
            raise ConfigError(f"crop_hw must fit in input_hw {self.input_hw}, got {self.crop_hw}")

    @classmethod
    def tiny(cls, seed: int = 0) -> TrainConfig:
        return cls(
            detector_steps=3,
            batch_size=2,
            colour_steps=3,
            colour_batch_size=8,
            input_hw=(128, 224),
            widths=(4, 8, 8, 8, 8),
            frames_per_scene=2,
            crop_hw=None,
            seed=seed,
            log_every=1,
        )


class TrainingInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str
    seed: int
    steps: int
    batch_size: int
    seconds: float
    torch_version: str
    date: str


class ModelCard(BaseModel):
    """The sidecar YAML next to each shipped ONNX model (same stem)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    task: Literal["detect", "classify"]
    layout: Literal["yolov8", "probs"]
    input_name: str
    output_name: str
    input_size: tuple[int, int]  # [H, W]
    letterbox_value: int | None = None
    channel_order: Literal["RGB"] = "RGB"
    scale: str = "[0, 1]"
    names: list[str]
    strides: list[int] | None = None
    training: TrainingInfo


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("torch", "train") from exc
    return torch


# -- data ------------------------------------------------------------------------------
_SIZES = ((640, 360), (1280, 720), (960, 540), (640, 480))
_SIZE_P = (0.45, 0.25, 0.15, 0.15)


def random_scenes(rng: np.random.Generator, frames_per_scene: int) -> Iterator[Any]:
    """Frames of random scenes (sizes, crowds, seeds), `frames_per_scene` from each."""
    while True:
        w, h = _SIZES[int(rng.choice(len(_SIZES), p=_SIZE_P))]
        config = SceneConfig(
            width=w,
            height=h,
            fps=10.0,
            duration_s=20.0,
            vehicles=int(rng.integers(1, 13)),
            pedestrians=int(rng.integers(0, 9)),
            plates=bool(rng.random() < 0.9),
            seed=int(rng.integers(0, 2**31)),
        )
        scene = SyntheticScene(config)
        for index in rng.choice(len(scene), size=frames_per_scene, replace=False):
            yield scene.frame(int(index))


def _jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Light photometric changes: contrast, brightness, sometimes blur."""
    gain, bias = rng.uniform(0.75, 1.25), rng.uniform(-25, 25)
    out = cv2.convertScaleAbs(image, alpha=gain, beta=bias)
    if rng.random() < 0.25:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return out


def _area(boxes: np.ndarray) -> np.ndarray:
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    return np.asarray(w * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))


def _crop(
    rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random crop of a [3, H, W] image; boxes are clipped to it and kept while a quarter
    of them remains (the rule the scenes use at the frame edge). Returns the crop, boxes,
    kept mask."""
    y0 = int(rng.integers(0, image.shape[1] - hw[0] + 1))
    x0 = int(rng.integers(0, image.shape[2] - hw[1] + 1))
    shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(shifted, 0, [hw[1], hw[0], hw[1], hw[0]]).astype(np.float32)
    keep = _area(clipped) >= 0.25 * np.maximum(_area(shifted), 1e-6)
    return image[:, y0 : y0 + hw[0], x0 : x0 + hw[1]], clipped, keep


def detector_batches(
    rng: np.random.Generator, config: TrainConfig
) -> Iterator[tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]]:
    """Batches of letterboxed (and cropped) images [B, 3, H, W] float32, boxes, classes.

    Frames go through the pipeline's own Letterboxer, so what the detector learns on is
    exactly what it is served.
    """
    frames = random_scenes(rng, config.frames_per_scene)
    hw = config.crop_hw or config.input_hw
    letterbox = Letterboxer(*config.input_hw, pad_value=PAD_VALUE)
    full = np.empty((3, *config.input_hw), dtype=np.float32)
    while True:
        images = np.empty((config.batch_size, 3, *hw), dtype=np.float32)
        boxes, classes = [], []
        for b in range(config.batch_size):
            frame = next(frames)
            placed = letterbox(_jitter(rng, frame.image), full)
            offset = np.array([placed.pad_x, placed.pad_y] * 2, np.float32)
            xyxy = frame.truth.boxes_xyxy * np.float32(placed.scale) + offset
            cls = frame.truth.class_id
            image = full
            if config.crop_hw:
                image, xyxy, keep = _crop(rng, full, xyxy, config.crop_hw)
                xyxy, cls = xyxy[keep], cls[keep]
            images[b] = image
            ok = (xyxy[:, 2] - xyxy[:, 0] >= 2) & (xyxy[:, 3] - xyxy[:, 1] >= 2)
            boxes.append(xyxy[ok])
            classes.append(cls[ok])
        yield images, boxes, classes


def colour_batches(
    rng: np.random.Generator, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Vehicle crops (jittered boxes) resized to 64x64 [B, 3, 64, 64] and colour ids."""
    frames = random_scenes(rng, 4)
    crops: list[np.ndarray] = []
    labels: list[int] = []
    while True:
        while len(crops) < batch_size:
            frame = next(frames)
            image, t = _jitter(rng, frame.image), frame.truth
            fh, fw = image.shape[:2]
            for box, cls, colour, vis in zip(
                t.boxes_xyxy, t.class_id, t.colour_id, t.visibility, strict=True
            ):
                if cls != VEHICLE or vis < 0.6:
                    continue
                bw, bh = box[2] - box[0], box[3] - box[1]
                d = rng.uniform(-0.08, 0.08, size=4) * np.array([bw, bh, bw, bh])
                x1, y1, x2, y2 = (box + d).round().astype(int)
                x1, y1, x2, y2 = max(0, x1), max(0, y1), min(fw, x2), min(fh, y2)
                if x2 - x1 < 4 or y2 - y1 < 4:
                    continue
                crop = cv2.resize(
                    image[y1:y2, x1:x2],
                    (COLOUR_INPUT, COLOUR_INPUT),
                    interpolation=cv2.INTER_LINEAR,
                )
                crops.append(crop.transpose(2, 0, 1))
                labels.append(int(colour))
        batch = np.stack(crops[:batch_size]).astype(np.float32) / np.float32(255.0)
        yield batch, np.asarray(labels[:batch_size], dtype=np.int64)
        del crops[:batch_size], labels[:batch_size]


# -- detector loss ---------------------------------------------------------------------
LEVEL_SPLIT_PX = 64.0  # objects whose longer side is at most this go to stride 8
CENTRE_RADIUS = 2.5  # positives lie within this many strides of the box centre


def assign(
    points: torch.Tensor, strides: torch.Tensor, boxes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FCOS-style assignment: for each cell, the index of its box (or -1) and a pos mask.

    A cell is positive for a box when its centre lies inside the box, within CENTRE_RADIUS
    strides of the box centre, and on the box's level (by size); the cell holding the
    centre is always positive. A cell claimed by several boxes takes the smallest.
    """
    torch = _torch()
    a, m = points.shape[0], boxes.shape[0]
    if m == 0:
        return torch.full((a,), -1, dtype=torch.long), torch.zeros(a, dtype=torch.bool)
    px, py = points[:, 0:1], points[:, 1:2]
    x1, y1, x2, y2 = boxes.T
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    size = torch.maximum(x2 - x1, y2 - y1)
    level_stride = torch.where(size <= LEVEL_SPLIT_PX, 8.0, 16.0)
    on_level = strides[:, None] == level_stride[None, :]
    inside = (px > x1) & (px < x2) & (py > y1) & (py < y2)
    radius = CENTRE_RADIUS * strides[:, None]
    near = ((px - cx).abs() < radius) & ((py - cy).abs() < radius)
    holds_centre = ((px - cx).abs() <= strides[:, None] / 2) & (
        (py - cy).abs() <= strides[:, None] / 2
    )
    pos = on_level & ((inside & near) | holds_centre)
    area = ((x2 - x1) * (y2 - y1))[None, :].expand(a, m)
    cost = torch.where(pos, area, torch.full_like(area, float("inf")))
    best_cost, best = cost.min(dim=1)
    positive = torch.isfinite(best_cost)
    return torch.where(positive, best, torch.full_like(best, -1)), positive


def _giou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    torch = _torch()
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(dim=1)
    return iou, iou - (hull - union) / (hull + 1e-7)


def detector_loss(
    levels: list[torch.Tensor], boxes: list[np.ndarray], classes: list[np.ndarray]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Quality focal loss on class scores (target = IoU at positives) + GIoU on boxes."""
    torch = _torch()
    from torch.nn import functional as F

    from edgetier.synthetic._nets import flatten, grid_points, ltrb_of

    points, strides = grid_points(levels)
    raw = flatten(levels)  # [N, 4 + C, A]
    num_classes = raw.shape[1] - 4
    ltrb = ltrb_of(raw, strides)  # [N, A, 4]
    pred = torch.cat([points[None] - ltrb[..., :2], points[None] + ltrb[..., 2:]], dim=2)
    logits = raw[:, 4:].transpose(1, 2)  # [N, A, C]
    target = torch.zeros_like(logits)
    box_losses, n_pos = [], 0
    for i in range(raw.shape[0]):
        gt = torch.as_tensor(boxes[i], dtype=torch.float32)
        cls = torch.as_tensor(classes[i], dtype=torch.long)
        idx, pos = assign(points, strides, gt)
        if not bool(pos.any()):
            continue
        matched = gt[idx[pos]]
        iou, giou = _giou(pred[i, pos], matched)
        box_losses.append((1.0 - giou).sum())
        target[i, pos, cls[idx[pos]]] = iou.detach().clamp(min=0.05)
        n_pos += int(pos.sum())
    denom = max(n_pos, 1)
    prob = logits.sigmoid()
    qfl = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss_cls = (qfl * (prob - target).abs().pow(2)).sum() / denom
    loss_box = torch.stack(box_losses).sum() / denom if box_losses else logits.sum() * 0
    del num_classes
    total = loss_cls + 2.0 * loss_box
    return total, {"cls": float(loss_cls.detach()), "box": float(loss_box.detach())}


# -- training --------------------------------------------------------------------------
def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_detector(config: TrainConfig, progress: Progress = _say) -> TinyDetector:
    torch = _torch()
    from edgetier.synthetic._nets import TinyDetector

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng([config.seed, 10])
    model = TinyDetector(len(CLASS_NAMES), config.widths)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.learning_rate, total_steps=config.detector_steps, pct_start=0.1
    )
    model.train()
    batches = detector_batches(rng, config)
    started, running = time.perf_counter(), None
    for step in range(1, config.detector_steps + 1):
        images, boxes, classes = next(batches)
        loss, parts = detector_loss(model.raw(torch.from_numpy(images)), boxes, classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % config.log_every == 0 or step == config.detector_steps:
            progress(
                f"detector step {step}/{config.detector_steps} "
                f"(epoch {(step - 1) * config.batch_size // 1000 + 1} of 1000 frames) "
                f"loss {running:.3f} cls {parts['cls']:.3f} box {parts['box']:.3f} "
                f"{time.perf_counter() - started:.0f} s"
            )
    return model.eval()


def train_colour(config: TrainConfig, progress: Progress = _say) -> ColourNet:
    torch = _torch()
    from torch.nn import functional as F

    from edgetier.synthetic._nets import ColourNet

    torch.manual_seed(config.seed + 1)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng([config.seed, 20])
    model = ColourNet(len(COLOUR_NAMES))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=config.colour_steps)
    batches = colour_batches(rng, config.colour_batch_size)
    model.train()
    started, correct, seen = time.perf_counter(), 0, 0
    for step in range(1, config.colour_steps + 1):
        images, labels = next(batches)
        logits = model(torch.from_numpy(images))
        target = torch.from_numpy(labels)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        correct += int((logits.argmax(1) == target).sum())
        seen += len(labels)
        if step % config.log_every == 0 or step == config.colour_steps:
            progress(
                f"colour step {step}/{config.colour_steps} loss {float(loss.detach()):.3f} "
                f"train accuracy {correct / seen:.3f} {time.perf_counter() - started:.0f} s"
            )
            correct = seen = 0
    return model.eval()


# -- export ----------------------------------------------------------------------------
def export_onnx(
    model: Any,
    path: Path,
    example: np.ndarray,
    *,
    output_name: str,
    atol: float = 1e-3,
    dynamo: bool = False,
) -> float:
    """Export with a dynamic batch axis; check onnxruntime against torch, return max |diff|.

    The TorchScript exporter is the default: it takes about a second where the torch.export
    one (`dynamo=True`) takes half a minute, which matters for the tests; both give the same
    graph for these plain conv nets. Output dims other than the batch are written as fixed
    sizes, so readers of the graph see [N, 4 + C, A] and [N, K].
    """
    torch = _torch()
    import onnx
    import onnxruntime as ort

    model.export_mode = True
    x = torch.from_numpy(example)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    axes = (
        {"dynamic_shapes": {"x": {0: batch}}}
        if dynamo
        else {"dynamic_axes": {"images": {0: "batch"}, output_name: {0: "batch"}}}
    )
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the exporters' own notices
            warnings.simplefilter("ignore", FutureWarning)
            expected = model(x).numpy()
            torch.onnx.export(
                model,
                (x,),
                str(path),
                input_names=["images"],
                output_names=[output_name],
                opset_version=18,
                dynamo=dynamo,
                **axes,
            )
    finally:
        model.export_mode = False
    proto = onnx.load(str(path))
    for i, dim in enumerate(proto.graph.output[0].type.tensor_type.shape.dim):
        if i == 0:
            dim.dim_param = "batch"
        else:
            dim.dim_value = int(expected.shape[i])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([output_name], {"images": example})[0]
    diff = float(np.abs(got - expected).max())
    if got.shape != expected.shape or diff > atol:
        raise ConfigError(
            f"{path.name}: onnxruntime output differs from torch (shape {got.shape} vs "
            f"{expected.shape}, max |diff| {diff:.2e}, limit {atol:.0e})"
        )
    return diff


def _export(
    model: Any, path: Path, example: np.ndarray, card: ModelCard, progress: Progress
) -> None:
    """Export ``model`` to ``path`` (checked against onnxruntime) with its YAML sidecar."""
    diff = export_onnx(model, path, example, output_name=card.output_name)
    progress(f"exported {path} (onnxruntime vs torch max |diff| {diff:.1e})")
    path.with_suffix(".yaml").write_text(
        yaml.safe_dump(card.model_dump(mode="json", exclude_none=True), sort_keys=False), "utf-8"
    )


def build_models(
    out_dir: Path, config: TrainConfig | None = None, progress: Progress = _say
) -> dict[str, Path]:
    """Train both models, export detector.onnx / colour.onnx with sidecars into `out_dir`."""
    torch = _torch()
    config = config or TrainConfig()
    out_dir = Path(out_dir)
    today = dt.date.today().isoformat()
    command = REBUILD_COMMAND if config == TrainConfig(seed=config.seed) else "build_models(...)"

    def made(steps: int, batch_size: int, started_s: float) -> TrainingInfo:
        return TrainingInfo(
            command=command,
            seed=config.seed,
            steps=steps,
            batch_size=batch_size,
            seconds=round(time.perf_counter() - started_s, 1),
            torch_version=str(torch.__version__),
            date=today,
        )

    started = time.perf_counter()
    detector = train_detector(config, progress)
    det_card = ModelCard(
        name="synthetic-traffic-detector",
        task="detect",
        layout="yolov8",
        input_name="images",
        output_name="output0",
        input_size=config.input_hw,
        letterbox_value=PAD_VALUE,
        names=list(CLASS_NAMES),
        strides=[8, 16],
        training=made(config.detector_steps, config.batch_size, started),
    )
    example, _, _ = next(
        detector_batches(
            np.random.default_rng([config.seed, 99]), replace(config, batch_size=2, crop_hw=None)
        )
    )
    det_path = out_dir / "detector.onnx"
    _export(detector, det_path, example, det_card, progress)

    started = time.perf_counter()
    colour = train_colour(config, progress)
    col_card = ModelCard(
        name="synthetic-vehicle-colour",
        task="classify",
        layout="probs",
        input_name="images",
        output_name="probs",
        input_size=(COLOUR_INPUT, COLOUR_INPUT),
        names=list(COLOUR_NAMES),
        training=made(config.colour_steps, config.colour_batch_size, started),
    )
    crops, _ = next(colour_batches(np.random.default_rng([config.seed, 98]), 2))
    col_path = out_dir / "colour.onnx"
    _export(colour, col_path, crops, col_card, progress)
    return {"detector": det_path, "colour": col_path}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgetier.synthetic train",
        description="Train the synthetic-scene detector and colour classifier; export ONNX.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the ONNX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a few steps of a tiny network")
    parser.add_argument("--steps", type=int, default=None, help="detector steps")
    args = parser.parse_args(argv)
    config = TrainConfig.tiny(args.seed) if args.tiny else TrainConfig(seed=args.seed)
    if args.steps is not None:
        config = replace(config, detector_steps=args.steps)
    started = time.perf_counter()
    paths = build_models(args.out, config)
    _say(f"done in {time.perf_counter() - started:.0f} s: " + ", ".join(map(str, paths.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
