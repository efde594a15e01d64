"""Content-addressed blob store: ``<data-dir>/blobs/sha256/<hex>``.

Any static server or CDN can serve the same directory; the file name is the content's digest,
so a blob never changes once written.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from chargeward.errors import IntegrityError, NotFound

_HEX = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "sha256"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _HEX.fullmatch(sha256):
            raise NotFound("no such blob")
        p = self.root / sha256
        if not p.is_file():
            raise NotFound(f"no blob {sha256}")
        return p

    def has(self, sha256: str) -> bool:
        return bool(_HEX.fullmatch(sha256)) and (self.root / sha256).is_file()

    def put(self, src: Path, sha256: str, length: int) -> Path:
        """Copy ``src`` in under its digest (atomically; verified by the caller beforehand)."""
        if not _HEX.fullmatch(sha256):
            raise IntegrityError("blob name must be a SHA-256 hex digest")
        dst = self.root / sha256
        if dst.is_file() and dst.stat().st_size == length:
            return dst
        tmp = self.root / f".{sha256}.tmp"
        with src.open("rb") as fsrc, tmp.open("wb") as fdst:
            shutil.copyfileobj(fsrc, fdst, 1 << 20)
            fdst.flush()
            os.fsync(fdst.fileno())
        if tmp.stat().st_size != length:
            tmp.unlink()
            raise IntegrityError("blob length changed while storing")
        os.replace(tmp, dst)
        return dst
