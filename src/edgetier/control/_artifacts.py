"""The controller's artifact store: files kept under their content's SHA-256.

``<root>/sha256/<first two hex>/<hex>``: the same file pushed twice is stored once, a
file's name is its digest (so a download can be checked end to end), and a file appears
only when it is complete (written to a temporary name, then renamed)::

    store = ArtifactStore(data_dir / "artifacts")
    stored = store.put(upload_file)           # StoredArtifact(digest="sha256:...", size_bytes=...)
    store.path(stored.digest).read_bytes()
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgetier.errors import InvalidInputError, NotFoundError

__all__ = ["DIGEST_PATTERN", "ArtifactStore", "StoredArtifact"]

DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredArtifact:
    digest: str  # sha256:<hex>
    size_bytes: int
    path: Path


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if not DIGEST_PATTERN.match(digest):
            raise InvalidInputError(f"digest must read sha256:<64 hex digits>, got {digest!r}")
        hex_digest = digest.removeprefix("sha256:")
        return self.root / "sha256" / hex_digest[:2] / hex_digest

    def open(self, digest: str) -> Path:
        """The stored file of ``digest``; NotFoundError when the store does not hold it."""
        path = self.path(digest)
        if not path.is_file():
            raise NotFoundError(f"artifact {digest} is not in the store")
        return path

    def put(self, source: BinaryIO) -> StoredArtifact:
        """Store a stream; its digest is computed while it is copied."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = f"sha256:{sha.hexdigest()}"
            final = self.path(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)  # the same content twice: the same file
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StoredArtifact(digest, size, final)
