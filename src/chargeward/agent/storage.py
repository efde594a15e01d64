"""Crash-safe file writes for the charger's flash: temp file, fsync, rename, fsync directory.

Every write is all-or-nothing: a power loss (or SIGKILL) at any instant leaves either the old
or the new content, never a mix.  The steps are named so fault-injection tests can stop the
process between any two of them (:func:`set_fault_hook`); the hook is None in production.

Every write the agent makes to its flash goes through one small interface, :class:`Flash`
(create, copy, fsync a file, rename, unlink, fsync a directory); :class:`OsFlash` is the real
one.  Tests swap in a crash model (``tests/support/crashfs.py``, :func:`set_flash`) that
records each operation and works out what a power cut may leave on the disk: unsynced file
data and unsynced directory entries may be lost (docs/adr/0036).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from chargeward.errors import IntegrityError

FaultHook = Callable[[str], None]
_fault_hook: FaultHook | None = None


class Flash(Protocol):
    """The primitive writes to the charger's flash.  None of them is durable by itself: data
    is durable after :meth:`fsync_file`, a create, rename or unlink after :meth:`fsync_dir`
    of its directory."""

    def makedirs(self, path: Path) -> None:
        """Create ``path`` and its parents if missing."""

    def write(self, path: Path, data: bytes, mode: int) -> None:
        """Create or truncate ``path`` (permissions ``mode`` when created) and write ``data``."""

    def copy(self, src: Path, path: Path) -> None:
        """Create or truncate ``path`` and copy ``src`` (a file outside the flash) into it."""

    def fsync_file(self, path: Path) -> None:
        """Make the data of ``path`` durable."""

    def rename(self, src: Path, dst: Path) -> None:
        """Atomically replace ``dst`` with ``src`` (same directory)."""

    def unlink(self, path: Path) -> None:
        """Remove ``path``."""

    def fsync_dir(self, path: Path) -> None:
        """Make the creates, renames and unlinks done in directory ``path`` durable."""


class OsFlash:
    """The real flash: a POSIX file system."""

    def makedirs(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def write(self, path: Path, data: bytes, mode: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def copy(self, src: Path, path: Path) -> None:
        with src.open("rb") as fsrc, path.open("wb") as fdst:
            shutil.copyfileobj(fsrc, fdst, 1 << 20)

    def fsync_file(self, path: Path) -> None:
        _fsync(path)

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        path.unlink()

    def fsync_dir(self, path: Path) -> None:
        _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_flash: Flash = OsFlash()


def set_flash(flash: Flash) -> Flash:
    """Write the flash through ``flash`` from now on (tests: a crash model); returns the old."""
    global _flash
    old, _flash = _flash, flash
    return old


def set_fault_hook(hook: FaultHook | None) -> FaultHook | None:
    """Call ``hook(step)`` at every named step of every flash write; returns the old hook."""
    global _fault_hook
    old, _fault_hook = _fault_hook, hook
    return old


def step(name: str) -> None:
    """A point where power may be lost (fault-injection tests stop the process here)."""
    if _fault_hook is not None:
        _fault_hook(name)


def fsync_dir(path: Path) -> None:
    _flash.fsync_dir(path)


def _commit(tmp: Path, path: Path) -> None:
    step(f"{path.name}:synced")
    _flash.rename(tmp, path)
    step(f"{path.name}:renamed")
    _flash.fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    _flash.makedirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    _flash.write(tmp, data, mode)
    _flash.fsync_file(tmp)
    _commit(tmp, path)


def atomic_copy(src: Path, dst: Path) -> None:
    _flash.makedirs(dst.parent)
    tmp = dst.with_name(f".{dst.name}.tmp")
    _flash.copy(src, tmp)
    step(f"{dst.name}:copied")
    _flash.fsync_file(tmp)
    _commit(tmp, dst)


def remove(path: Path) -> None:
    """Delete ``path`` (if present) durably."""
    if path.exists():
        step(f"{path.name}:unlink")
        _flash.unlink(path)
        _flash.fsync_dir(path.parent)


def write_json(path: Path, data: Any, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode(), mode)


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when there is none.  Writes are atomic, so a file
    that does not parse was damaged on the flash: :class:`IntegrityError` names it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (ValueError, RecursionError) as e:  # undecodable bytes, bad JSON, absurd nesting
        raise IntegrityError(f"state file {path} is damaged: {e}") from e
