"""The Chargeward firmware image envelope (CWFW), the reference charger's image format.

Like MCUboot's ``imgtool sign``, the release tool prefixes the payload with a small header
carrying what the charger must know *from the image itself*: component, version, security
version (anti-rollback counter) and hardware models.  Because the OCPP signature covers the
whole file, the header is authenticated together with the payload.

Layout::

    b"CWFW" | version 0x01 | 4-byte big-endian header length | header (canonical JSON) | payload
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import BinaryIO

from chargeward.crypto.signature import Digest, sha256_file
from chargeward.errors import BundleError, IntegrityError
from chargeward.model.firmware import ImageHeader

MAGIC = b"CWFW\x01"
MAX_HEADER = 64 * 1024
_PREFIX = len(MAGIC) + 4
CHUNK = 1 << 20


def canonical_json(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pack_image(
    payload: Path,
    out: Path,
    *,
    component: str,
    version: str,
    security_version: int,
    hardware_models: list[str],
) -> tuple[ImageHeader, Digest]:
    """Write ``out`` = envelope(header describing ``payload``) + payload.

    Returns the header and the SHA-256/length of the whole file written (what is signed).
    """
    digest = sha256_file(payload)
    header = ImageHeader(
        component,
        version,
        security_version,
        tuple(hardware_models),
        digest.sha256,
        digest.length,
    )
    raw = canonical_json(header.to_dict())
    with out.open("wb") as dst, payload.open("rb") as src:
        prefix = MAGIC + struct.pack(">I", len(raw)) + raw
        whole = hashlib.sha256(prefix)  # the digest the OCPP signature covers, in the same pass
        dst.write(prefix)
        length = len(prefix)
        while chunk := src.read(CHUNK):
            whole.update(chunk)
            dst.write(chunk)
            length += len(chunk)
    if length != len(prefix) + digest.length:
        raise IntegrityError(f"{payload} changed while it was packed")
    return header, Digest(whole.hexdigest(), length)


def read_header_from(fh: BinaryIO) -> tuple[ImageHeader, int]:
    """Parse the envelope header; returns it and the payload offset."""
    prefix = fh.read(_PREFIX)
    if len(prefix) < _PREFIX or not prefix.startswith(MAGIC):
        raise BundleError("not a Chargeward firmware image (bad magic)")
    (n,) = struct.unpack(">I", prefix[len(MAGIC) :])
    if n > MAX_HEADER:
        raise BundleError(f"image header of {n} bytes exceeds {MAX_HEADER}")
    raw = fh.read(n)
    if len(raw) != n:
        raise BundleError("image header truncated")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError("image header is not valid UTF-8 JSON") from e
    return ImageHeader.from_dict(data), _PREFIX + n


def read_header(path: Path) -> ImageHeader:
    with path.open("rb") as fh:
        return read_header_from(fh)[0]


def check_image(path: Path) -> ImageHeader:
    """Parse the header and check the payload's length and SHA-256 against it."""
    with path.open("rb") as fh:
        header, _ = read_header_from(fh)
        h = hashlib.sha256()
        length = 0
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            length += len(chunk)
    if length != header.payload_length or h.hexdigest() != header.payload_sha256:
        raise IntegrityError("image payload does not match its header")
    return header
