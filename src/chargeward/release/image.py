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
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from chargeward.crypto.signature import Digest, sha256_file
from chargeward.errors import BundleError, IntegrityError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.firmware import ImageHeader

MAGIC = b"CWFW\x01"
_PREFIX = len(MAGIC) + 4
CHUNK = 1 << 20


def canonical_json(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class EnvelopeStream:
    """The envelope (prefix + payload) as a readable stream, hashed as it is read.

    Lets a bundle take the image straight into its tar: no temporary copy of the image.
    """

    def __init__(self, prefix: bytes, payload: BinaryIO) -> None:
        self._prefix = prefix
        self._payload = payload
        self._hash = hashlib.sha256()
        self.length = 0

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``CHUNK`` if ``n`` < 1); short only at the end of the payload."""
        want = n if n > 0 else CHUNK
        head, self._prefix = self._prefix[:want], self._prefix[want:]
        chunk = head + self._payload.read(want - len(head)) if len(head) < want else head
        self._hash.update(chunk)
        self.length += len(chunk)
        return chunk

    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest(), self.length)


def image_header(
    payload: Path,
    *,
    component: str,
    version: str,
    security_version: int,
    hardware_models: list[str],
) -> tuple[ImageHeader, bytes]:
    """The header describing ``payload`` and the envelope prefix that carries it."""
    digest = sha256_file(payload)
    header = ImageHeader(
        component,
        version,
        security_version,
        tuple(hardware_models),
        digest.sha256,
        digest.length,
    )
    return header, envelope_prefix(header)


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
    header, prefix = image_header(
        payload,
        component=component,
        version=version,
        security_version=security_version,
        hardware_models=hardware_models,
    )
    with out.open("wb") as dst, payload.open("rb") as src:
        stream = EnvelopeStream(prefix, src)
        while chunk := stream.read(CHUNK):
            dst.write(chunk)
    digest = stream.digest()
    if digest.length != len(prefix) + header.payload_length:
        raise IntegrityError(f"{payload} changed while it was packed")
    return header, digest


def envelope_prefix(header: ImageHeader) -> bytes:
    """The bytes before the payload in an image with ``header``."""
    raw = canonical_json(header.to_dict())
    return MAGIC + struct.pack(">I", len(raw)) + raw


def rewrap_image(image: Path, out: Path, release: ImageHeader) -> Digest:
    """Write ``out`` = ``image``'s payload in an envelope naming ``release``'s component,
    version, security version and models; returns the SHA-256/length of ``out``.

    A pinned component keeps its payload from one release to the next while its signed header
    names the new release: a charger rebuilds the new image from the one it runs and compares
    the digest with the listed one instead of downloading it again.  Nothing here is trusted:
    the caller checks the digest and the signature of ``out``.
    """
    with image.open("rb") as src, out.open("wb") as dst:
        old, _ = read_header_from(src)
        header = replace(
            release, payload_sha256=old.payload_sha256, payload_length=old.payload_length
        )
        stream = EnvelopeStream(envelope_prefix(header), src)
        while chunk := stream.read(CHUNK):
            dst.write(chunk)
    return stream.digest()


def read_header_from(fh: BinaryIO) -> tuple[ImageHeader, int]:
    """Parse the envelope header; returns it and the payload offset."""
    prefix = fh.read(_PREFIX)
    if len(prefix) < _PREFIX or not prefix.startswith(MAGIC):
        raise BundleError("not a Chargeward firmware image (bad magic)")
    (n,) = struct.unpack(">I", prefix[len(MAGIC) :])
    if n > DEFAULT_FORMAT_LIMITS.image_header_bytes:
        raise BundleError(
            f"image header of {n} bytes exceeds {DEFAULT_FORMAT_LIMITS.image_header_bytes}"
        )
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
