"""Drawing for the synthetic scenes: the static background and the object sprites.

A sprite is an RGB patch, a boolean mask of the pixels it covers and an offset from the
object's anchor (the point where it touches the ground). Sprites are cropped to their mask,
so a sprite's placement rectangle is exactly the object's ground-truth box. Shapes are drawn
without anti-aliasing so that no pixel strays outside that box; only plate text is smoothed,
and it lies inside the plate.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import cv2
import numpy as np

from edgetier.synthetic._config import ROAD_BOTTOM_Y, ROAD_TOP_Y

COLOUR_NAMES: tuple[str, ...] = ("white", "black", "grey", "red", "blue", "green", "yellow")
_COLOUR_RGB = np.array(
    [
        (232, 232, 228),
        (28, 28, 32),
        (128, 130, 136),
        (196, 32, 36),
        (34, 66, 186),
        (36, 136, 62),
        (232, 196, 36),
    ],
    dtype=np.int32,
)
VEHICLE_KINDS: tuple[str, ...] = ("car", "van", "truck", "bus")

# Layout of the road scene as fractions of the frame height (y) — the same at every size.
HORIZON_Y = 0.28
LANES = 4
LANE_H = (ROAD_BOTTOM_Y - ROAD_TOP_Y) / LANES
PLATE_H = 0.03  # plate height as a fraction of frame height
PLATE_ASPECT = 3.6


@dataclass(frozen=True, slots=True)
class Sprite:
    """An object's pixels: `rgb` [h, w, 3] uint8, `mask` [h, w] bool, anchor offset."""

    rgb: np.ndarray
    mask: np.ndarray
    offset_x: int  # sprite left = anchor x + offset_x
    offset_y: int  # sprite top = anchor y + offset_y
    plate_xyxy: tuple[int, int, int, int] | None = None  # inside the sprite

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())

    @property
    def mask_u8(self) -> np.ndarray:
        return self.mask.view(np.uint8)  # bool and uint8 share a layout: no copy


def _crop(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return rgb[y : y + h, x : x + w].copy(), mask[y : y + h, x : x + w].copy(), x, y


def random_plate_text(rng: np.random.Generator) -> str:
    """Seven characters, letters and digits, in the pattern LLDDLLL (e.g. 'KX42BTR')."""
    letters = rng.choice(list(string.ascii_uppercase), size=5)
    digits = rng.choice(list(string.digits), size=2)
    return "".join([*letters[:2], *digits, *letters[2:]])


def vehicle_colour(rng: np.random.Generator, colour_id: int) -> tuple[int, int, int]:
    rgb = _COLOUR_RGB[colour_id] + rng.integers(-14, 15, size=3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))  # type: ignore[return-value]


def _rounded_rect(
    img: np.ndarray, x1: int, y1: int, x2: int, y2: int, r: int, colour: tuple[int, ...]
) -> None:
    r = max(0, min(r, (x2 - x1) // 2, (y2 - y1) // 2))
    cv2.rectangle(img, (x1 + r, y1), (x2 - r, y2), colour, -1)
    cv2.rectangle(img, (x1, y1 + r), (x2, y2 - r), colour, -1)
    for cx, cy in ((x1 + r, y1 + r), (x2 - r, y1 + r), (x1 + r, y2 - r), (x2 - r, y2 - r)):
        cv2.circle(img, (cx, cy), r, colour, -1)


def vehicle_sprite(
    rng: np.random.Generator,
    *,
    frame_h: int,
    kind: str,
    colour: tuple[int, int, int],
    plate_text: str | None,
    facing_right: bool,
) -> Sprite:
    """Side view of a car, van, truck or bus; the anchor is the rear-left ground point."""
    bh = max(6, round(rng.uniform(0.055, 0.08) * frame_h))  # body height
    length_factor = {"car": (2.8, 3.4), "van": (2.6, 3.0), "truck": (4.0, 4.6), "bus": (4.4, 5.0)}
    length = round(bh * rng.uniform(*length_factor[kind]))
    top_h = round(bh * {"car": 0.7, "van": 0.95, "truck": 1.15, "bus": 1.2}[kind])
    r_wheel = max(2, round(0.32 * bh))
    h = top_h + bh + r_wheel + 2
    rgb = np.zeros((h, length + 2, 3), dtype=np.uint8)
    mask = np.zeros((h, length + 2), dtype=np.uint8)
    body_y1, body_y2 = top_h, top_h + bh
    glass = (150, 182, 200)
    dark = tuple(max(0, c - 45) for c in colour)
    layers: list[tuple[str, tuple[int, ...]]] = [("body", colour), ("glass", glass)]
    for layer, col in layers:
        for img, c in ((rgb, col), (mask, (1,))):
            if layer == "body":
                _rounded_rect(img, 0, body_y1, length, body_y2, bh // 4, c)
                if kind == "car":
                    pts = np.array(
                        [
                            (round(0.12 * length), body_y1),
                            (round(0.3 * length), 0),
                            (round(0.72 * length), 0),
                            (round(0.9 * length), body_y1),
                        ],
                        dtype=np.int32,
                    )
                    cv2.fillPoly(img, [pts], c)
                elif kind == "van":
                    _rounded_rect(img, 0, 0, round(0.93 * length), body_y1 + bh // 3, bh // 4, c)
                elif kind == "truck":
                    _rounded_rect(img, 0, 0, round(0.7 * length), body_y1 + 2, 2, c)
                    _rounded_rect(
                        img, round(0.73 * length), top_h // 3, length, body_y1 + 2, bh // 5, c
                    )
                else:  # bus
                    _rounded_rect(img, 0, 0, length, body_y2, bh // 4, c)
            elif img is rgb:  # windows only change colours, never the mask
                if kind == "car":
                    for x1, x2 in ((0.31, 0.49), (0.52, 0.7)):
                        cv2.rectangle(
                            img,
                            (round(x1 * length), top_h // 5),
                            (round(x2 * length), body_y1 - 2),
                            c,
                            -1,
                        )
                elif kind == "van":
                    cv2.rectangle(
                        img,
                        (round(0.7 * length), top_h // 5),
                        (round(0.88 * length), body_y1 - 2),
                        c,
                        -1,
                    )
                elif kind == "truck":
                    cv2.rectangle(
                        img,
                        (round(0.8 * length), top_h // 2),
                        (round(0.95 * length), body_y1 - 2),
                        c,
                        -1,
                    )
                    cv2.line(img, (0, body_y1 - 1), (round(0.7 * length), body_y1 - 1), dark, 2)
                else:
                    n = 5
                    for i in range(n):
                        x1 = round((0.05 + 0.18 * i) * length)
                        cv2.rectangle(
                            img, (x1, top_h // 5), (x1 + round(0.14 * length), top_h - 2), c, -1
                        )
    # shading stripe, lights
    cv2.line(rgb, (bh // 4, body_y2 - bh // 5), (length - bh // 4, body_y2 - bh // 5), dark, 2)
    cv2.rectangle(
        rgb, (length - 4, body_y1 + 3), (length - 1, body_y1 + bh // 3), (250, 240, 190), -1
    )
    cv2.rectangle(rgb, (0, body_y1 + 3), (3, body_y1 + bh // 3), (210, 20, 20), -1)
    wheel_x = [0.2, 0.8] if kind in ("car", "van") else [0.16, 0.64, 0.84]
    for fx in wheel_x:
        centre = (round(fx * length), body_y2)
        cv2.circle(rgb, centre, r_wheel, (26, 26, 26), -1)
        cv2.circle(rgb, centre, max(1, r_wheel // 2), (150, 150, 150), -1)
        cv2.circle(mask, centre, r_wheel, 1, -1)
    plate: tuple[int, int, int, int] | None = None
    if plate_text is not None:
        ph = max(5, round(PLATE_H * frame_h))
        pw = round(ph * PLATE_ASPECT)
        px1 = (length - pw) // 2
        py1 = body_y1 + max(1, (bh - ph) // 3)
        bg = (240, 240, 236) if rng.random() < 0.7 else (238, 206, 40)
        cv2.rectangle(rgb, (px1, py1), (px1 + pw - 1, py1 + ph - 1), (20, 20, 20), -1)
        cv2.rectangle(rgb, (px1 + 1, py1 + 1), (px1 + pw - 2, py1 + ph - 2), bg, -1)
        cv2.rectangle(mask, (px1, py1), (px1 + pw - 1, py1 + ph - 1), 1, -1)
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), _ = cv2.getTextSize(plate_text, font, 1.0, 1)
        scale = min(0.84 * pw / tw, 0.62 * ph / th)
        (tw, th), _ = cv2.getTextSize(plate_text, font, scale, 1)
        org = (px1 + (pw - tw) // 2, py1 + (ph + th) // 2)
        cv2.putText(rgb, plate_text, org, font, scale, (15, 15, 15), 1, cv2.LINE_AA)
        plate = (px1, py1, px1 + pw, py1 + ph)
    rgb_c, mask_c, x0, y0 = _crop(rgb, mask.astype(bool))
    if plate is not None:
        plate = (plate[0] - x0, plate[1] - y0, plate[2] - x0, plate[3] - y0)
    if not facing_right:  # the sprite was drawn facing right; mirror it (plate included)
        w = rgb_c.shape[1]
        rgb_c, mask_c = rgb_c[:, ::-1].copy(), mask_c[:, ::-1].copy()
        if plate is not None:
            flipped = rgb_c[plate[1] : plate[3], w - plate[2] : w - plate[0]]
            flipped[...] = flipped[:, ::-1]  # text reads left to right again
            plate = (w - plate[2], plate[1], w - plate[0], plate[3])
    return Sprite(rgb_c, mask_c, 0, -rgb_c.shape[0], plate)


def pedestrian_style(rng: np.random.Generator, frame_h: int) -> dict[str, object]:
    skin = [(236, 196, 164), (198, 144, 104), (140, 94, 62), (96, 62, 40)]
    return {
        "height": max(10, round(rng.uniform(0.085, 0.12) * frame_h)),
        "skin": skin[int(rng.integers(len(skin)))],
        "shirt": tuple(int(v) for v in rng.integers(20, 240, size=3)),
        "legs": tuple(int(v) for v in rng.integers(15, 140, size=3)),
    }


def pedestrian_sprite(style: dict[str, object], phase: float) -> Sprite:
    """A walking figure at `phase` in [0, 1) of its stride; the anchor is between the feet."""
    hp = int(style["height"])  # type: ignore[call-overload]
    w = hp // 2 + 2
    cx = w // 2
    rgb = np.zeros((hp + 1, w, 3), dtype=np.uint8)
    mask = np.zeros((hp + 1, w), dtype=np.uint8)
    swing = 0.12 * hp * np.sin(2 * np.pi * phase)
    thick = max(1, round(0.07 * hp))
    skin, shirt, legs = style["skin"], style["shirt"], style["legs"]
    for img, one in ((rgb, False), (mask, True)):

        def col(c: object) -> tuple[int, ...]:
            return (1,) if one else c  # type: ignore[return-value]  # noqa: B023

        hip_y, foot_y = round(0.56 * hp), hp - thick // 2 - 1
        for sgn in (-1, 1):
            foot_x = round(cx + sgn * swing)
            cv2.line(img, (cx + sgn * round(0.05 * hp), hip_y), (foot_x, foot_y), col(legs), thick)
            hand_x = round(cx + sgn * 0.17 * hp - sgn * 0.5 * swing)
            shoulder = (cx + sgn * round(0.12 * hp), round(0.22 * hp))
            cv2.line(img, shoulder, (hand_x, round(0.5 * hp)), col(skin), max(1, thick - 1))
        cv2.rectangle(
            img,
            (cx - round(0.13 * hp), round(0.19 * hp)),
            (cx + round(0.13 * hp), round(0.58 * hp)),
            col(shirt),
            -1,
        )
        cv2.circle(img, (cx, round(0.1 * hp)), max(2, round(0.085 * hp)), col(skin), -1)
    rgb_c, mask_c, x0, y0 = _crop(rgb, mask.astype(bool))
    return Sprite(rgb_c, mask_c, x0 - cx, y0 - hp)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Buildings, pavements, a four-lane road with markings; static texture included."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    y_h, y_rt, y_rb = (round(f * height) for f in (HORIZON_Y, ROAD_TOP_Y, ROAD_BOTTOM_Y))
    sky = np.array(rng.integers(150, 215, size=3), dtype=np.uint8)
    img[:y_h] = sky
    x = 0
    while x < width:  # buildings
        bw = int(rng.integers(width // 14, width // 6))
        top = int(rng.integers(0, max(1, y_h // 2)))
        shade = tuple(int(v) for v in rng.integers(70, 190, size=3))
        cv2.rectangle(img, (x, top), (x + bw, y_h), shade, -1)
        for wy in range(top + 6, y_h - 8, 14):
            for wx in range(x + 5, x + bw - 8, 12):
                if rng.random() < 0.7:
                    cv2.rectangle(img, (wx, wy), (wx + 5, wy + 7), (60, 70, 90), -1)
        x += bw + int(rng.integers(0, width // 40 + 1))
    pave = int(rng.integers(150, 185))
    img[y_h:y_rt] = pave
    img[y_rb:] = pave
    for y in (*range(y_h, y_rt, max(4, height // 40)), *range(y_rb, height, max(4, height // 40))):
        cv2.line(img, (0, y), (width, y), (pave - 25,) * 3, 1)
    asphalt = int(rng.integers(62, 96))
    img[y_rt:y_rb] = asphalt
    cv2.line(img, (0, y_rt), (width, y_rt), (220, 220, 220), 3)
    cv2.line(img, (0, y_rb), (width, y_rb), (220, 220, 220), 3)
    dash = max(8, width // 32)
    for lane in range(1, LANES):
        y = round((ROAD_TOP_Y + lane * LANE_H) * height)
        if lane == LANES // 2:  # the centre line: double yellow
            cv2.line(img, (0, y - 3), (width, y - 3), (220, 190, 40), 2)
            cv2.line(img, (0, y + 3), (width, y + 3), (220, 190, 40), 2)
        else:
            for x0 in range(0, width, 2 * dash):
                cv2.line(img, (x0, y), (x0 + dash, y), (225, 225, 225), 2)
    coarse = rng.normal(0.0, 7.0, size=(height // 4 + 1, width // 4 + 1, 1)).astype(np.float32)
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    fine = rng.normal(0.0, 4.0, size=(height, width, 1)).astype(np.float32)
    out: np.ndarray = np.clip(img.astype(np.float32) + texture + fine, 0, 255).astype(np.uint8)
    return out


def noise_pool(
    rng: np.random.Generator, width: int, height: int, count: int = 4, sigma: float = 3.0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-frame sensor noise as (add, subtract) uint8 pairs, so cv2 can apply it saturating."""
    pool = []
    for _ in range(count):
        n = rng.normal(0.0, sigma, size=(height, width, 1)).astype(np.int16)
        n = np.repeat(n, 3, axis=2)
        pool.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
    return pool
