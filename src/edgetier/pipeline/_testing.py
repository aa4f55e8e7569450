"""Helpers for tests and benchmarks: small random ONNX models, a throwaway Mosquitto and
RTSP relay.

The models have the layouts of the shipped ones (YOLOv8-style detector, softmax
classifier) with random weights, so the pipeline can be exercised anywhere.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper


def make_random_detector(
    path: Path,
    *,
    input_size: int = 64,
    names: tuple[str, ...] = ("vehicle", "pedestrian", "plate"),
    stride: int = 8,
    seed: int = 0,
) -> Path:
    """A detector [N,3,S,S] -> output0 [N, 4+C, (S/stride)^2], boxes in input pixels."""
    rng = np.random.default_rng(seed)
    c = 4 + len(names)
    anchors = (input_size // stride) ** 2
    weight = rng.normal(0, 0.5, (c, 3, stride, stride)).astype(np.float32)
    scale = np.array([input_size] * 4 + [1.0] * len(names), np.float32).reshape(1, c, 1)
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["conv"], strides=[stride, stride]),
        helper.make_node("Reshape", ["conv", "shape"], ["flat"]),
        helper.make_node("Sigmoid", ["flat"], ["sig"]),
        helper.make_node("Mul", ["sig", "scale"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array([0, c, anchors], np.int64), "shape"),
        numpy_helper.from_array(scale, "scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "detector",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, ["N", 3, input_size, input_size]
            )
        ],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", c, anchors])],
        inits,
    )
    _save(graph, path)
    sidecar = {
        "names": list(names),
        "input_size": [input_size, input_size],
        "letterbox_value": 114,
        "layout": "yolov8",
    }
    path.with_suffix(".yaml").write_text(yaml.safe_dump(sidecar))
    return path


def make_random_classifier(
    path: Path,
    *,
    input_size: int = 64,
    names: tuple[str, ...] = ("red", "blue", "white"),
    seed: int = 0,
) -> Path:
    """A classifier [N,3,S,S] -> probs [N, K] (softmax of a linear map of the mean colour)."""
    rng = np.random.default_rng(seed)
    k = len(names)
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(0, 3, (3, k)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(k, np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, ["N", 3, input_size, input_size]
            )
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k])],
        inits,
    )
    _save(graph, path)
    path.with_suffix(".yaml").write_text(
        yaml.safe_dump({"names": list(names), "input_size": [input_size, input_size]})
    )
    return path


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess(ABC):
    """A server binary run for a test on 127.0.0.1: start, wait for its ports, stop or kill;
    restartable on the same ports."""

    name = "service"
    start_timeout_s = 10.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The service's command line."""

    @abstractmethod
    def ports(self) -> list[int]:
        """TCP ports that accept connections once the service is up."""

    def start(self, timeout_s: float | None = None) -> None:
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        self._proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        for port in self.ports():
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if self._proc.poll() is not None:
                        raise RuntimeError(
                            f"{self.name} exited with {self._proc.returncode}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{self.name} did not listen on port {port} in {timeout_s} s"
                        ) from None
                    time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the service dies without a goodbye, as in a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Mosquitto(ServiceProcess):
    """A Mosquitto broker on 127.0.0.1 with a temporary config; restartable on its port.

    `persistence=True` keeps subscriptions and queued QoS 1 messages across restarts
    (saved every second), so a client with a persistent session misses nothing.
    """

    name = "mosquitto"

    def __init__(self, *, port: int | None = None, persistence: bool = False) -> None:
        super().__init__()
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise FileNotFoundError("mosquitto is not installed (make system-deps installs it)")
        self.binary = binary
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="edgetier-mqtt-"))
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {self._dir}/",
                "autosave_interval 1",
            ]
        self.config = self._dir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config)]

    def ports(self) -> list[int]:
        return [self.port]

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(et, ev, tb)
        shutil.rmtree(self._dir, ignore_errors=True)


def free_udp_range(count: int) -> int:
    """A base port such that base .. base+count-1 are free UDP ports on 127.0.0.1."""
    for _ in range(100):
        base = random.randrange(20_000, 60_000, 2)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free UDP ports")


class RtspRelay(ServiceProcess):
    """rtsp-server-perl on 127.0.0.1: publishers ANNOUNCE/RECORD on one port, readers PLAY
    on another; restartable on the same ports."""

    name = "rtsp-server-perl"
    start_timeout_s = 15.0

    def __init__(self) -> None:
        super().__init__()
        binary = shutil.which("rtsp-server-perl")
        if binary is None:
            raise FileNotFoundError("rtsp-server-perl is not installed (make system-deps)")
        self.binary = binary
        self.publish_port = free_port()
        self.play_port = free_port()
        self.rtp_base = free_udp_range(64)  # the server hands out RTP/RTCP pairs from here

    def publish_url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.publish_port}/{path}"

    def play_url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.play_port}/{path}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--serverport",
            str(self.publish_port),
            "--clientport",
            str(self.play_port),
            "--source_listen_address",
            "127.0.0.1",
            "--client_listen_address",
            "127.0.0.1",
            "--rtp_start_port",
            str(self.rtp_base),
            "--loglevel",
            "1",
        ]

    def ports(self) -> list[int]:
        return [self.publish_port, self.play_port]
