"""What a synthetic scene holds: the one config of the scene generator.

It is light (pydantic only), so a pipeline file's ``synthetic`` source validates its
``scene`` with it without importing the generator::

    config = SceneConfig(width=640, height=360, duration_s=5.0, seed=7)
    config.frame_count                                     # 150
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from edgetier.config import ConfigModel, FieldError

__all__ = ["DEFAULT_LINES", "ROAD_BOTTOM_Y", "ROAD_TOP_Y", "SceneConfig"]

ROAD_TOP_Y = 0.40
"""Where the road starts and ends, as fractions of the frame height."""
ROAD_BOTTOM_Y = 0.86

Coordinate = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Coordinate, Coordinate]
Line = tuple[Point, Point]

DEFAULT_LINES: tuple[Line, ...] = (((0.5, ROAD_TOP_Y - 0.03), (0.5, ROAD_BOTTOM_Y + 0.03)),)
"""One counting line across the road, top to bottom, at mid-width."""


class SceneConfig(ConfigModel):
    """What a synthetic scene holds. ``vehicles`` and ``pedestrians`` are the mean numbers
    in view at once; ``lines`` are counting lines in normalised frame coordinates
    ((x, y) in [0, 1]).

    Invalid values raise ConfigError naming every bad field, its value and its limit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(default=1280, ge=160, le=7680)
    height: int = Field(default=720, ge=120, le=4320)
    fps: float = Field(default=30.0, ge=1.0, le=240.0)
    duration_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    vehicles: int = Field(default=6, ge=0, le=64)
    pedestrians: int = Field(default=4, ge=0, le=64)
    plates: bool = True
    seed: int = Field(default=0, ge=0)
    lines: tuple[Line, ...] = DEFAULT_LINES

    @model_validator(mode="after")
    def _check(self) -> SceneConfig:
        if self.duration_s * self.fps < 1.0:
            raise FieldError(
                "duration_s",
                f"must last at least one frame (>= 1/fps = {1 / self.fps:.4g} s), "
                f"got {self.duration_s!r}",
            )
        for i, (start, end) in enumerate(self.lines):
            if start == end:
                raise FieldError(
                    f"lines[{i}]", f"must join two distinct points, got {(start, end)!r}"
                )
        return self

    @property
    def frame_count(self) -> int:
        return max(1, round(self.duration_s * self.fps))
