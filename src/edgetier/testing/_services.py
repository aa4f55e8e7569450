"""Services the tests start on 127.0.0.1: a Mosquitto broker and an RTSP relay.

with Mosquitto() as broker:
    publish_to(f"127.0.0.1:{broker.port}")
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

from edgetier.errors import StartupError
from edgetier.testing._ports import free_port, free_udp_range, wait_for_port


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
        proc = self._proc

        def alive() -> str | None:
            code = proc.poll()
            return None if code is None else f"{self.name} exited with status {code}"

        for port in self.ports():
            try:
                wait_for_port(port, timeout_s=timeout_s, alive=alive)
            except (StartupError, TimeoutError) as exc:
                self.kill()
                raise StartupError(f"{self.name} did not start: {exc}") from None

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
