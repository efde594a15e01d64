"""Publishing files safely: written in full, flushed to disk, never over an existing file.

A file is written to a hidden temporary name in the destination directory, fsynced, then
linked into place, which fails if the destination appeared meanwhile; readers therefore
see either nothing or the complete file.

    >>> out = Path(tempfile.mkdtemp())
    >>> with new_file(out / "release.cwb") as fh:
    ...     _ = fh.write(b"a release")
    >>> write_new_file(out / "root.pem", b"a certificate")
    >>> sorted(p.name for p in out.iterdir())  # no temporary file left behind
    ['release.cwb', 'root.pem']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from chargeward.errors import ChargewardError, ConfigError, Conflict


def refuse_existing(path: Path) -> None:
    """Raise :class:`Conflict` if ``path`` exists (or is a dangling symlink)."""
    if path.exists() or path.is_symlink():
        raise Conflict(f"{path} already exists; refusing to overwrite it")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, dest: Path) -> None:
    try:
        os.link(tmp, dest)
    except FileExistsError as e:
        raise Conflict(f"{dest} already exists; refusing to overwrite it") from e
    except OSError:
        refuse_existing(dest)
        try:
            os.replace(tmp, dest)
        except OSError as e:
            raise ConfigError(f"cannot write {dest}: {e.strerror}") from e
    else:
        tmp.unlink()
    _fsync_dir(dest.parent)


@contextlib.contextmanager
def _synced_temp(dest: Path, mode: int) -> Iterator[tuple[BinaryIO, Path]]:
    """A hidden temporary file beside ``dest``; flushed to disk when the block ends."""
    directory = dest.parent if str(dest.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise ConfigError(f"cannot write to {directory}: {e.strerror}") from e
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            yield fh, tmp
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def new_file(dest: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``dest`` when the block ends without error.

    Raises :class:`Conflict` if ``dest`` exists (checked before and when publishing) and
    :class:`ConfigError` if the directory is not writable.  On error nothing is left behind.
    """
    refuse_existing(dest)
    with _synced_temp(dest, mode) as (fh, tmp):
        yield fh
    try:
        _publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_new_file(dest: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to the new file ``dest`` (see :func:`new_file`)."""
    with new_file(dest, mode=mode) as fh:
        fh.write(data)


def replace_file(dest: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Atomically write ``data`` to ``dest``, replacing any previous version.

    Readers see the old or the new file, never a mixture; a crash leaves one of the two.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _synced_temp(dest, mode) as (fh, tmp):
        fh.write(data)
    try:
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dest.parent)


def read_capped(
    path: Path, limit: int, *, what: str = "", error: type[ChargewardError] = ConfigError
) -> bytes:
    """The bytes of an input file, refused (as ``error``) when unreadable or over ``limit``."""
    name = f"{what} {path}" if what else str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read {name}: {e.strerror}") from e
    if len(data) > limit:
        raise error(f"{name}: larger than {limit} bytes")
    return data
