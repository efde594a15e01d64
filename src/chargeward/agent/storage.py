"""Crash-safe file writes for the charger's flash: temp file, fsync, rename, fsync directory.

Every write is all-or-nothing: a power loss (or SIGKILL) at any instant leaves either the old
or the new content, never a mix.  The steps are named so fault-injection tests can stop the
process between any two of them (:func:`set_fault_hook`); the hook is None in production.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chargeward.errors import IntegrityError

FaultHook = Callable[[str], None]
_fault_hook: FaultHook | None = None


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
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    step(f"{path.name}:synced")
    os.replace(tmp, path)
    step(f"{path.name}:renamed")
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    _commit(tmp, path)


def atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with src.open("rb") as fsrc, tmp.open("wb") as fdst:
        shutil.copyfileobj(fsrc, fdst, 1 << 20)
        step(f"{dst.name}:copied")
        fdst.flush()
        os.fsync(fdst.fileno())
    _commit(tmp, dst)


def remove(path: Path) -> None:
    """Delete ``path`` (if present) durably."""
    if path.exists():
        step(f"{path.name}:unlink")
        path.unlink()
        fsync_dir(path.parent)


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
