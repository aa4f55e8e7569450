"""The system shared-memory extension: regions a client created with ``shm_open``.

A client creates a POSIX shared-memory object (``tritonclient.utils.shared_memory``
does), registers it under a name with its key, offset and size, and then names the
region, an offset inside it and a byte size for inputs and outputs instead of sending
the data.

The server never maps the object. The client owns it and may shrink or remove it at any
moment, and touching a page of a mapping past the end of a shrunk object kills the
process with SIGBUS. So each use reads with ``pread`` (and writes with ``pwrite``) on a
descriptor opened at registration, after checking the object's current size: a region
that shrank is a 400 for that request, and a read that races a shrink comes back short
(also a 400) instead of faulting. The price is one copy of the input bytes.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetier.errors import InvalidInputError, NotFoundError, PayloadTooLargeError

SHM_DIR = Path("/dev/shm")

MAX_REGIONS = 1024
"""Registered regions (one open descriptor each) a server holds at most."""

_OPEN_FLAGS = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


@dataclass(slots=True)
class _Region:
    name: str
    key: str
    offset: int
    byte_size: int
    fd: int


class SharedMemoryRegistry:
    """System shared-memory regions registered by clients, by name."""

    def __init__(
        self,
        shm_dir: Path = SHM_DIR,
        *,
        max_regions: int = MAX_REGIONS,
        max_read_bytes: int | None = None,
    ) -> None:
        """``max_read_bytes`` bounds one tensor's read, as the body size bounds a request."""
        self._dir = shm_dir
        self._max_regions = max_regions
        self._max_read_bytes = max_read_bytes
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Register ``byte_size`` bytes of the object ``key`` from ``offset`` as ``name``."""
        if not name:
            raise InvalidInputError("shared memory region name must not be empty")
        if not key or "/" in key.lstrip("/") or key.strip("/") in ("", ".", ".."):
            raise InvalidInputError(
                f"shared memory key {key!r} is not valid: it must name one object "
                f"as given to shm_open, e.g. '/input_data'"
            )
        if offset < 0:
            raise InvalidInputError(f"shared memory offset must be >= 0, got {offset}")
        if byte_size <= 0:
            raise InvalidInputError(f"shared memory byte_size must be >= 1, got {byte_size}")
        with self._lock:
            if name in self._regions:
                raise InvalidInputError(
                    f"shared memory region {name!r} is already registered; unregister it first"
                )
            if len(self._regions) >= self._max_regions:
                raise InvalidInputError(
                    f"{len(self._regions)} shared memory regions are registered, the "
                    f"server's limit; unregister some first"
                )
            path = self._dir / key.lstrip("/")
            try:
                fd = os.open(path, _OPEN_FLAGS)
            except FileNotFoundError:
                raise NotFoundError(
                    f"shared memory key {key!r} does not exist (no {path.name} in "
                    f"{self._dir}); create it with shm_open first"
                ) from None
            except OSError as exc:
                raise InvalidInputError(
                    f"shared memory key {key!r} cannot be opened: {exc.strerror}"
                ) from None
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise InvalidInputError(
                        f"shared memory key {key!r} is not a shared-memory object"
                    )
                if offset + byte_size > info.st_size:
                    raise InvalidInputError(
                        f"shared memory region {name!r}: offset {offset} + byte_size "
                        f"{byte_size} exceeds the object's size {info.st_size} (key {key!r})"
                    )
            except BaseException:
                os.close(fd)
                raise
            self._regions[name] = _Region(name, key, offset, byte_size, fd)

    def unregister(self, name: str | None = None) -> None:
        """Forget one region, or all of them when ``name`` is empty or None.

        Unregistering a name that is not registered is not an error (as Triton).
        """
        with self._lock:
            names = [name] if name else list(self._regions)
            for one in names:
                region = self._regions.pop(one, None)
                if region is not None:
                    os.close(region.fd)

    def status(self, name: str | None = None) -> list[dict[str, object]]:
        """Name, key, offset and byte_size of one region or of all of them."""
        with self._lock:
            if name:
                if name not in self._regions:
                    raise NotFoundError(f"shared memory region {name!r} is not registered")
                regions = [self._regions[name]]
            else:
                regions = list(self._regions.values())
            return [
                {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                for r in regions
            ]

    def check(self, region: str, offset: int, byte_size: int, *, tensor: str) -> None:
        """Raise unless ``[offset, offset + byte_size)`` lies inside a registered region."""
        self._window(region, offset, byte_size, tensor)

    def read(self, region: str, offset: int, byte_size: int, *, tensor: str) -> memoryview:
        """A copy of the bytes ``[offset, offset + byte_size)`` of a region, for ``tensor``."""
        found = self._window(region, offset, byte_size, tensor)
        limit = self._max_read_bytes
        if limit is not None and byte_size > limit:
            raise PayloadTooLargeError(
                f"tensor {tensor!r}: shared_memory_byte_size {byte_size} exceeds the limit of "
                f"{limit} bytes a request may carry (--max-request-size-bytes)"
            )
        start = found.offset + offset
        self._check_size(found, start + byte_size, tensor)
        buffer = np.empty(byte_size, dtype=np.uint8).data  # not zero-filled: pread fills it
        got = os.preadv(found.fd, [buffer], start) if byte_size else 0
        if got != byte_size:  # shrank between the size check and the read
            self._check_size(found, start + byte_size, tensor)
            raise InvalidInputError(
                f"tensor {tensor!r}: shared memory region {region!r} gave {got} of "
                f"{byte_size} bytes (its object {found.key!r} is shrinking)"
            )
        return buffer

    def write(
        self, region: str, offset: int, byte_size: int, data: bytes | memoryview, *, tensor: str
    ) -> None:
        """Copy an output's bytes into a region; they must fit in ``byte_size``."""
        found = self._window(region, offset, byte_size, tensor)
        view = memoryview(data).cast("B")
        size = view.nbytes
        if size > byte_size:
            raise InvalidInputError(
                f"output {tensor!r}: {size} bytes do not fit in shared_memory_byte_size "
                f"{byte_size} of region {region!r}"
            )
        start = found.offset + offset
        self._check_size(found, start + size, tensor)
        done = 0
        while done < size:
            done += os.pwrite(found.fd, view[done:], start + done)

    def close(self) -> None:
        """Close every region's descriptor."""
        self.unregister(None)

    def _window(self, region: str, offset: int, byte_size: int, tensor: str) -> _Region:
        found = self._regions.get(region)
        if found is None:
            raise InvalidInputError(
                f"tensor {tensor!r}: shared memory region {region!r} is not registered"
            )
        if offset < 0 or byte_size < 0:
            raise InvalidInputError(
                f"tensor {tensor!r}: shared_memory_offset and shared_memory_byte_size must be "
                f">= 0, got {offset} and {byte_size}"
            )
        if offset + byte_size > found.byte_size:
            raise InvalidInputError(
                f"tensor {tensor!r}: shared_memory_offset {offset} + shared_memory_byte_size "
                f"{byte_size} exceeds region {region!r} of {found.byte_size} bytes"
            )
        return found

    @staticmethod
    def _check_size(found: _Region, end: int, tensor: str) -> None:
        """The object must still hold ``end`` bytes: its owner may have shrunk it."""
        size = os.fstat(found.fd).st_size
        if end > size:
            raise InvalidInputError(
                f"tensor {tensor!r}: shared memory region {found.name!r} needs bytes up to "
                f"{end} of its object {found.key!r}, which now holds {size}: the client "
                f"shrank it after registering; register it again"
            )
