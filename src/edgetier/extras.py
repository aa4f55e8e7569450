"""Which optional dependency group ("extra") brings which module.

A node installs ``pip install edgetier`` and adds extras for what it does: ``video`` for
pipelines, ``bench`` for benchmarks and plots, ``train`` for training, ``tflite`` for the
LiteRT engine, ``control`` for the fleet controller, ``mqtt`` for MQTT change notices
(``video`` brings paho-mqtt too, for the MQTT sink). A missing module is turned into a
MissingExtraError with the install command at the edge (the CLI, a lazy import)::

    try:
        import cv2
    except ModuleNotFoundError as exc:
        raise missing_extra(exc) or exc
"""

from __future__ import annotations

from edgetier.errors import MissingExtraError

__all__ = ["EXTRA_OF_MODULE", "missing_extra"]

EXTRA_OF_MODULE: dict[str, str] = {
    "av": "video",
    "cv2": "video",
    "supervision": "video",
    "trackers": "video",
    "paho": "mqtt",
    "asyncua": "video",
    "motmetrics": "video",
    "matplotlib": "bench",
    "PIL": "bench",
    "geventhttpclient": "bench",
    "gevent": "bench",
    "aiohttp": "bench",
    "fastapi": "control",
    "starlette": "control",
    "sqlalchemy": "control",
    "alembic": "control",
    "multipart": "control",
    "python_multipart": "control",
    "torch": "train",
    "onnxscript": "train",
    "ai_edge_litert": "tflite",
    "tflite_runtime": "tflite",
}
"""Top-level module -> the extra that installs it."""


def missing_extra(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The MissingExtraError for a module an extra brings; None for any other module."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    error = MissingExtraError(module, extra)
    error.__cause__ = exc
    return error
