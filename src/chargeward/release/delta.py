"""Binary deltas between firmware images (the ``.cwdl`` format).

A delta rebuilds one image (*to*) from another (*from*, the image a charger runs).  It is a
detools patch (bsdiff algorithm, ``sequential`` patch type, LZMA; chosen by measurement, ADR
0016) behind a small header naming both ends by digest::

    b"CWDL\\x01" | 4-byte big-endian header length | header (canonical JSON) | detools patch

    header = {"algorithm": "detools-sequential-lzma",
              "from": {"sha256": ..., "length": ...}, "to": {"sha256": ..., "length": ...}}

Applying streams: the charger reads its running image and the patch and writes the new image
chunk by chunk, hashing as it writes, into a temporary file that becomes ``out`` only when the
result has the expected length and SHA-256.  A delta for another base, a corrupt or truncated
patch, or a result other than expected is refused with one :class:`DeltaError` line and
leaves nothing behind.

    old, new, d = Path("1.0.0.cwfw"), Path("1.1.0.cwfw"), Path("d.cwdl")
    info = make_delta(old, new, d)
    apply_delta(old, d, Path("out.cwfw"), expected=info.to, max_size=1 << 29)
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import detools

from chargeward.crypto.signature import Digest, sha256_file
from chargeward.errors import IntegrityError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.release.image import canonical_json

MAGIC = b"CWDL\x01"
ALGORITHM = "detools-sequential-lzma"
_PREFIX = len(MAGIC) + 4


class DeltaError(IntegrityError):
    """A delta that cannot rebuild the expected image (corrupt, for another base, ...)."""


@dataclass(frozen=True)
class DeltaInfo:
    """What a delta file rebuilds from what, and its own digest."""

    source: Digest  # the image it applies to
    to: Digest  # the image it rebuilds
    sha256: str  # of the .cwdl file
    length: int
    algorithm: str = ALGORITHM


def _digest(value: object, where: str) -> Digest:
    if not isinstance(value, dict) or set(value) != {"sha256", "length"}:
        raise DeltaError(f"delta header: {where} must be {{sha256, length}}")
    sha256, length = value["sha256"], value["length"]
    if not isinstance(sha256, str) or len(sha256) != 64 or sha256.strip("0123456789abcdef"):
        raise DeltaError(f"delta header: {where} sha256 must be 64 lowercase hex digits")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise DeltaError(f"delta header: {where} length must be a non-negative integer")
    return Digest(sha256, length)


def _read_header(fh: BinaryIO) -> tuple[Digest, Digest]:
    prefix = fh.read(_PREFIX)
    if len(prefix) < _PREFIX or prefix[: len(MAGIC)] != MAGIC:
        raise DeltaError("not a Chargeward delta (no CWDL header)")
    (size,) = struct.unpack(">I", prefix[len(MAGIC) :])
    if not 0 < size <= DEFAULT_FORMAT_LIMITS.delta_header_bytes:
        raise DeltaError(
            f"delta header of {size} bytes (at most {DEFAULT_FORMAT_LIMITS.delta_header_bytes})"
        )
    raw = fh.read(size)
    try:
        header = json.loads(raw)
    except ValueError as e:  # also invalid UTF-8
        raise DeltaError(f"delta header is not JSON: {e}") from e
    if not isinstance(header, dict) or set(header) != {"algorithm", "from", "to"}:
        raise DeltaError("delta header must hold exactly algorithm, from and to")
    if header["algorithm"] != ALGORITHM:
        raise DeltaError(f"delta algorithm {header['algorithm']!r} is not {ALGORITHM!r}")
    if canonical_json(header) != raw:
        raise DeltaError("delta header is not canonical JSON")
    return _digest(header["from"], "from"), _digest(header["to"], "to")


def read_delta(path: Path) -> DeltaInfo:
    """The header of the delta at ``path`` (DeltaError when it has none)."""
    with path.open("rb") as fh:
        source, to = _read_header(fh)
    own = sha256_file(path)
    return DeltaInfo(source, to, own.sha256, own.length)


def delta_result(path: Path) -> Digest:
    """The digest of the image the delta at ``path`` says it rebuilds."""
    return read_delta(path).to


def make_delta(old: Path, new: Path, out: Path) -> DeltaInfo:
    """Write the delta rebuilding ``new`` from ``old`` to ``out``; returns what it holds."""
    source, to = sha256_file(old), sha256_file(new)
    if source == to:
        raise DeltaError(f"{old} and {new} are the same image: no delta needed")
    header = canonical_json(
        {
            "algorithm": ALGORITHM,
            "from": {"sha256": source.sha256, "length": source.length},
            "to": {"sha256": to.sha256, "length": to.length},
        }
    )
    with old.open("rb") as ffrom, new.open("rb") as fto, out.open("wb") as fpatch:
        fpatch.write(MAGIC + struct.pack(">I", len(header)) + header)
        detools.create_patch(ffrom, fto, fpatch, compression="lzma", patch_type="sequential")
    own = sha256_file(out)
    return DeltaInfo(source, to, own.sha256, own.length)


class _CheckedWriter:
    """Writes at most ``limit`` bytes, hashing them."""

    def __init__(self, fh: BinaryIO, limit: int) -> None:
        self.fh = fh
        self.limit = limit
        self.length = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.length += len(data)
        if self.length > self.limit:
            raise DeltaError(f"the delta rebuilds more than the expected {self.limit} bytes")
        self.hash.update(data)
        return self.fh.write(data)


def apply_delta(
    old: Path, delta: Path, out: Path, *, expected: Digest | None = None, max_size: int
) -> None:
    """Rebuild the image the delta at ``delta`` makes from ``old`` into the new file ``out``.

    ``expected``: the digest the result must have (from a signed source: the image's TUF
    target); it must also be what the delta's header says.  Raises DeltaError; ``out`` then
    does not exist.
    """
    with delta.open("rb") as fpatch:
        source, to = _read_header(fpatch)
        if expected is not None and expected != to:
            raise DeltaError(
                f"the delta rebuilds image {to.sha256[:12]}, not the expected "
                f"{expected.sha256[:12]}"
            )
        if to.length > max_size:
            raise DeltaError(f"the delta rebuilds {to.length} bytes; the limit is {max_size}")
        base = sha256_file(old)
        if base != source:
            raise DeltaError(
                f"the delta applies to image {source.sha256[:12]}, not to {base.sha256[:12]}"
            )
        fd, name = tempfile.mkstemp(prefix=".delta-", dir=out.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as raw, old.open("rb") as ffrom:
                writer = _CheckedWriter(raw, to.length)
                try:
                    detools.apply_patch(ffrom, fpatch, writer)
                except DeltaError:
                    raise
                except Exception as e:  # detools.Error, lzma.LZMAError, struct.error, ...
                    raise DeltaError(f"the delta is corrupt: {e or type(e).__name__}") from e
                got = Digest(writer.hash.hexdigest(), writer.length)
                if got != to:
                    raise DeltaError(
                        f"the delta rebuilt {got.length} bytes with SHA-256 {got.sha256[:12]}, "
                        f"not image {to.sha256[:12]}"
                    )
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
