"""The system shared-memory extension: regions a client created with ``shm_open``.

A client creates a POSIX shared-memory object (``tritonclient.utils.shared_memory``
does), registers it under a name with its key, offset and size, and then names the
region, an offset inside it and a byte size for inputs and outputs instead of sending
the data. The server maps ``/dev/shm/<key>``; inputs are read in place (no copy).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from edgetier.errors import InvalidInputError, NotFoundError

SHM_DIR = Path("/dev/shm")


@dataclass(slots=True)
class _Region:
    name: str
    key: str
    offset: int
    byte_size: int
    map: mmap.mmap
    view: memoryview  # the registered window [offset, offset + byte_size)


class SharedMemoryRegistry:
    """System shared-memory regions registered by clients, by name."""

    def __init__(self, shm_dir: Path = SHM_DIR) -> None:
        self._dir = shm_dir
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes of the object ``key`` from ``offset`` under ``name``."""
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
            path = self._dir / key.lstrip("/")
            try:
                fd = os.open(path, os.O_RDWR)
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
                size = os.fstat(fd).st_size
                if offset + byte_size > size:
                    raise InvalidInputError(
                        f"shared memory region {name!r}: offset {offset} + byte_size "
                        f"{byte_size} exceeds the object's size {size} (key {key!r})"
                    )
                mapped = mmap.mmap(fd, offset + byte_size)
            finally:
                os.close(fd)
            view = memoryview(mapped)[offset : offset + byte_size]
            self._regions[name] = _Region(name, key, offset, byte_size, mapped, view)

    def unregister(self, name: str | None = None) -> None:
        """Forget one region, or all of them when ``name`` is empty or None.

        Unregistering a name that is not registered is not an error (as Triton).
        """
        with self._lock:
            names = [name] if name else list(self._regions)
            for one in names:
                region = self._regions.pop(one, None)
                if region is not None:
                    _close(region)

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

    def view(self, region: str, offset: int, byte_size: int, *, tensor: str) -> memoryview:
        """The bytes ``[offset, offset + byte_size)`` of a region, for tensor ``tensor``."""
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
        return found.view[offset : offset + byte_size]

    def write(
        self, region: str, offset: int, byte_size: int, data: bytes | memoryview, *, tensor: str
    ) -> None:
        """Copy an output's bytes into a region; they must fit in ``byte_size``."""
        target = self.view(region, offset, byte_size, tensor=tensor)
        size = memoryview(data).nbytes
        if size > byte_size:
            raise InvalidInputError(
                f"output {tensor!r}: {size} bytes do not fit in shared_memory_byte_size "
                f"{byte_size} of region {region!r}"
            )
        target[:size] = memoryview(data).cast("B")

    def close(self) -> None:
        """Unmap every region."""
        self.unregister(None)


def _close(region: _Region) -> None:
    region.view.release()
    # A request may still read from it; then the map closes when its last view goes away.
    with contextlib.suppress(BufferError):
        region.map.close()
