"""The tar container of a release bundle: written deterministically, read defensively.

Reading never uses ``TarFile.extract``/``extractall``.  Every member header is checked first
(:func:`scan_members`): only regular files with the exact names a bundle may hold, no
absolute paths, ``..``, links, devices, directories or duplicates, each under a size cap.
Member data is then copied by :func:`copy_member` to a path the caller chose, never to a
path taken from the archive.

    with open_bundle(Path("release.cwb")) as tar:
        members = scan_members(tar)
        raw = read_member(tar, members.manifest, DEFAULT_FORMAT_LIMITS.manifest_bytes)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from chargeward.crypto.signature import Digest
from chargeward.errors import BundleError, Conflict, InvalidValue, NotFound, TransportError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.release.manifest import (
    ATTESTATION_NAMES,
    CERTIFICATE_NAME,
    IMAGE_SUFFIX,
    IMAGES_DIR,
    MANIFEST_NAME,
)

CHUNK = 1 << 20
_IMAGE_MEMBER_RE = re.compile(
    re.escape(IMAGES_DIR) + r"/[a-z0-9][a-z0-9_-]{0,31}" + re.escape(IMAGE_SUFFIX)
)
_REFUSED_TYPES = {
    tarfile.SYMTYPE: "is a symbolic link",
    tarfile.LNKTYPE: "is a hard link",
    tarfile.DIRTYPE: "is a directory",
    tarfile.CHRTYPE: "is a character device",
    tarfile.BLKTYPE: "is a block device",
    tarfile.FIFOTYPE: "is a FIFO",
    tarfile.GNUTYPE_SPARSE: "is a sparse file",
    tarfile.CONTTYPE: "is a contiguous file",
}


@dataclass(frozen=True)
class BundleMembers:
    """The checked members of a bundle: manifest, certificate, and images and supply-chain
    attestations by member name."""

    manifest: tarfile.TarInfo
    certificate: tarfile.TarInfo
    images: dict[str, tarfile.TarInfo]
    attestations: dict[str, tarfile.TarInfo]


@contextlib.contextmanager
def open_bundle(path: Path) -> Iterator[tarfile.TarFile]:
    """Open ``path`` as an uncompressed tar; :class:`BundleError` if it is not one."""
    if not path.exists():
        raise NotFound(f"bundle {path} does not exist")
    if not path.is_file():
        raise BundleError(f"bundle {path} is not a regular file")
    with contextlib.ExitStack() as stack:
        try:
            tar = stack.enter_context(tarfile.TarFile(path, mode="r", copybufsize=CHUNK))
        except tarfile.TarError as e:
            raise BundleError(f"{path} is not an uncompressed tar bundle: {e}") from e
        except OSError as e:
            raise BundleError(f"cannot read bundle {path}: {e.strerror}") from e
        yield tar


def _size_limit(name: str, max_image_bytes: int) -> int:
    if name == MANIFEST_NAME:
        return DEFAULT_FORMAT_LIMITS.manifest_bytes
    if name == CERTIFICATE_NAME:
        return DEFAULT_FORMAT_LIMITS.archive_certificate_bytes
    if name in ATTESTATION_NAMES:
        return DEFAULT_FORMAT_LIMITS.attestation_bytes
    if _IMAGE_MEMBER_RE.fullmatch(name):
        return max_image_bytes
    raise BundleError(f"member {name!r}: unexpected member; a bundle holds only {_expected()}")


def _expected() -> str:
    return (
        f"{MANIFEST_NAME}, {CERTIFICATE_NAME}, {IMAGES_DIR}/<component>{IMAGE_SUFFIX} "
        f"and {', '.join(ATTESTATION_NAMES)}"
    )


def check_member(member: tarfile.TarInfo, *, max_image_bytes: int) -> None:
    """Refuse a member that is not a regular file with an expected name and size."""
    name = member.name
    if not name:
        raise BundleError("member with an empty name")
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise BundleError(f"member {name!r}: absolute path refused")
    if ".." in re.split(r"[/\\]", name):
        raise BundleError(f"member {name!r}: path traversal ('..') refused")
    if member.type in _REFUSED_TYPES:
        raise BundleError(f"member {name!r}: {_REFUSED_TYPES[member.type]}; only regular files")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BundleError(f"member {name!r}: unsupported tar type {member.type!r}")
    limit = _size_limit(name, max_image_bytes)
    if member.size > limit:
        raise BundleError(f"member {name!r}: {member.size} bytes exceeds the limit of {limit}")


def scan_members(
    tar: tarfile.TarFile, *, max_image_bytes: int = DEFAULT_FORMAT_LIMITS.bundle_image_bytes
) -> BundleMembers:
    """Read and check every member header (data is skipped, not read)."""
    seen: dict[str, tarfile.TarInfo] = {}
    most_members = DEFAULT_FORMAT_LIMITS.release_images + 2 + len(ATTESTATION_NAMES)
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as e:
            where = f"after member {next(reversed(seen))!r}" if seen else "at its start"
            raise BundleError(f"bundle is damaged {where}: {e}") from e
        except OSError as e:
            raise BundleError(f"cannot read bundle: {e.strerror}") from e
        if member is None:
            break
        check_member(member, max_image_bytes=max_image_bytes)
        if member.name in seen:
            raise BundleError(f"member {member.name!r}: appears twice")
        if len(seen) >= most_members:
            raise BundleError(f"member {member.name!r}: more than {most_members} members")
        seen[member.name] = member
    for required in (MANIFEST_NAME, CERTIFICATE_NAME):
        if required not in seen:
            raise BundleError(f"member {required!r}: missing from the bundle")
    manifest = seen.pop(MANIFEST_NAME)
    certificate = seen.pop(CERTIFICATE_NAME)
    attestations = {name: seen.pop(name) for name in ATTESTATION_NAMES if name in seen}
    return BundleMembers(manifest, certificate, seen, attestations)


def _reader(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    fh = tar.extractfile(member)
    if fh is None:
        raise BundleError(f"member {member.name!r}: not a regular file")
    return fh


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    """The data of a small member, at most ``limit`` bytes."""
    if member.size > limit:
        raise BundleError(f"member {member.name!r}: {member.size} bytes exceeds the limit")
    try:
        data = _reader(tar, member).read(limit + 1)
    except (tarfile.TarError, OSError) as e:
        raise BundleError(f"member {member.name!r}: cannot be read: {e}") from e
    if len(data) != member.size:
        raise BundleError(f"member {member.name!r}: truncated")
    return data


def copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> Digest:
    """Copy a member's data to the new file ``dest``; returns its SHA-256 and length."""
    h = hashlib.sha256()
    length = 0
    src = _reader(tar, member)
    try:
        with dest.open("xb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                length += len(chunk)
    except tarfile.TarError as e:
        raise BundleError(f"member {member.name!r}: cannot be read: {e}") from e
    except FileExistsError as e:
        raise Conflict(f"cannot extract {member.name!r}: {dest} already exists") from e
    except OSError as e:
        raise TransportError(f"cannot extract {member.name!r} to {dest}: {e.strerror}") from e
    if length != member.size:
        raise BundleError(f"member {member.name!r}: truncated")
    return Digest(h.hexdigest(), length)


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_bundle_tar(
    out: BinaryIO,
    *,
    files: dict[str, Path] | None = None,
    streams: dict[str, tuple[int, BinaryIO]] | None = None,
    blobs: dict[str, bytes | Callable[[], bytes]],
    mtime: int,
) -> None:
    """Write a POSIX (pax) tar of ``files``, ``streams`` and ``blobs``, sorted by name.

    A stream is ``(size, reader)``; a blob may be a callable, called when its turn comes, so
    it can depend on members written before it (a manifest signing the image before it).
    Owner, group and mode are fixed (0/0, 0644) and every mtime is ``mtime``, so the same
    inputs always give the same bytes.
    """
    files, streams = files or {}, streams or {}
    names = sorted([*files, *streams, *blobs])
    if len(set(names)) != len(names):
        raise InvalidValue("a member name is given twice")
    with tarfile.TarFile(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK
    ) as tar:
        for name in names:
            if name in blobs:
                blob = blobs[name]
                data = blob() if callable(blob) else blob
                tar.addfile(_tarinfo(name, len(data), mtime), io.BytesIO(data))
            elif name in streams:
                size, reader = streams[name]
                tar.addfile(_tarinfo(name, size, mtime), reader)
            else:
                path = files[name]
                with path.open("rb") as src:
                    size = os.fstat(src.fileno()).st_size
                    tar.addfile(_tarinfo(name, size, mtime), src)
