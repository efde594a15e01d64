"""A crash model of the charger's flash: what a power cut may leave on the disk.

:class:`CrashFS` implements :class:`chargeward.agent.storage.Flash`.  It performs every
operation on a real directory (the agent reads its flash with ordinary file reads) and keeps,
beside it, a model of what is *durable* under a POSIX / ext4-like file system (the model
ALICE and CrashMonkey test against):

- file data written but not fsynced may be lost: after a crash the file holds its last synced
  data (nothing, for a file never synced), the new data, or a torn part of it;
- a create, rename or unlink is durable only once its directory is fsynced; until then each
  may be lost, independently of the others (no ordering between them is assumed);
- an fsync of a file makes its data durable, not its name; an fsync of a directory makes every
  earlier create, rename and unlink in that directory durable.

Directories made with ``makedirs`` are taken as durable (a simplification: the agent's
directories exist from provisioning).  :meth:`CrashFS.crash_states` gives, for a crash just
before operation ``k``, a bounded set of the states the disk may be in: everything unsynced
lost, everything kept (what SIGKILL leaves), each unsynced item alone lost or alone kept, torn
data, and seeded random subsets.  :func:`materialise` writes one into a fresh directory.

For mutation tests ``skip`` names syncs to leave out (by their number in the run, or by the
storage function that calls them): a skipped sync is recorded but does nothing.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chargeward.agent.storage import OsFlash

SYNCS = ("fsync_file", "fsync_dir")


@dataclass(frozen=True)
class Inode:
    durable: bytes | None  # the data a crash keeps for sure; None: never synced
    data: bytes  # the data written


@dataclass(frozen=True)
class DirOp:
    """One create, rename or unlink: the names it sets (inode) or removes (None)."""

    directory: str
    names: tuple[tuple[str, int | None], ...]
    index: int  # the operation that made it


@dataclass(frozen=True)
class Op:
    index: int
    kind: str  # write | copy | fsync_file | rename | unlink | fsync_dir | makedirs
    path: str
    dst: str = ""
    site: str = ""  # the storage function that called it
    sync: int | None = None  # the number of this sync in the run (0-based)
    skipped: bool = False  # a sync left out (mutation)

    def __str__(self) -> str:
        where = f"{self.path} -> {self.dst}" if self.dst else self.path
        note = " (skipped)" if self.skipped else ""
        return f"#{self.index} {self.kind} {where} [{self.site}]{note}"


@dataclass
class Model:
    inodes: dict[int, Inode] = field(default_factory=dict)
    durable: dict[str, int] = field(default_factory=dict)  # name -> inode, on the disk
    live: dict[str, int] = field(default_factory=dict)  # name -> inode, as the agent sees
    pending: tuple[DirOp, ...] = ()  # directory operations not yet durable

    def copy(self) -> Model:
        return Model(dict(self.inodes), dict(self.durable), dict(self.live), self.pending)


@dataclass(frozen=True)
class CrashState:
    point: int  # the crash happened just before operation ``point``
    label: str  # which choice of lost and kept items
    files: tuple[tuple[str, bytes], ...]


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


class CrashFS:
    """A :class:`~chargeward.agent.storage.Flash` that records a crash model of ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        skip_syncs: Collection[int] = (),
        skip_sites: Collection[str] = (),
    ) -> None:
        self.root = root.resolve()
        self.skip_syncs = frozenset(skip_syncs)
        self.skip_sites = frozenset(skip_sites)
        self.ops: list[Op] = []
        self.before: list[Model] = []  # the model just before each operation
        self._real = OsFlash()
        self._syncs = 0
        self._next_inode = 0
        self.model = Model()
        for path in sorted(self.root.rglob("*")):  # everything there now is durable
            if path.is_file():
                ino = self._inode(Inode(path.read_bytes(), path.read_bytes()))
                self.model.durable[self._rel(path)] = ino
                self.model.live[self._rel(path)] = ino

    # -- bookkeeping
    def _rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def _inode(self, inode: Inode) -> int:
        self._next_inode += 1
        self.model.inodes[self._next_inode] = inode
        return self._next_inode

    def _record(self, kind: str, path: Path, dst: Path | None = None) -> Op:
        site = sys._getframe(2).f_code.co_name  # the storage function calling the Flash method
        sync = None
        skipped = False
        if kind in SYNCS:
            sync = self._syncs
            self._syncs += 1
            skipped = sync in self.skip_syncs or site in self.skip_sites
        op = Op(
            len(self.ops),
            kind,
            self._rel(path),
            self._rel(dst) if dst is not None else "",
            site,
            sync,
            skipped,
        )
        self.before.append(self.model.copy())
        self.ops.append(op)
        return op

    def _set_data(self, path: Path, data: bytes, index: int) -> None:
        rel, m = self._rel(path), self.model
        if rel in m.live:
            ino = m.live[rel]
            m.inodes[ino] = Inode(m.inodes[ino].durable, data)
        else:
            ino = self._inode(Inode(None, data))
            m.live[rel] = ino
            m.pending = (*m.pending, DirOp(_parent(rel), ((rel, ino),), index))

    # -- the Flash interface
    def makedirs(self, path: Path) -> None:
        self._real.makedirs(path)
        self._record("makedirs", path)

    def write(self, path: Path, data: bytes, mode: int) -> None:
        op = self._record("write", path)
        self._real.write(path, data, mode)
        self._set_data(path, data, op.index)

    def copy(self, src: Path, path: Path) -> None:
        op = self._record("copy", path)
        self._real.copy(src, path)
        self._set_data(path, src.read_bytes(), op.index)

    def fsync_file(self, path: Path) -> None:
        op = self._record("fsync_file", path)
        if op.skipped:
            return
        self._real.fsync_file(path)
        m = self.model
        ino = m.live[op.path]
        m.inodes[ino] = Inode(m.inodes[ino].data, m.inodes[ino].data)

    def rename(self, src: Path, dst: Path) -> None:
        op = self._record("rename", src, dst)
        self._real.rename(src, dst)
        m = self.model
        ino = m.live.pop(op.path)
        m.live[op.dst] = ino
        change = DirOp(_parent(op.dst), ((op.dst, ino), (op.path, None)), op.index)
        m.pending = (*m.pending, change)

    def unlink(self, path: Path) -> None:
        op = self._record("unlink", path)
        self._real.unlink(path)
        m = self.model
        del m.live[op.path]
        m.pending = (*m.pending, DirOp(_parent(op.path), ((op.path, None),), op.index))

    def fsync_dir(self, path: Path) -> None:
        op = self._record("fsync_dir", path)
        if op.skipped:
            return
        self._real.fsync_dir(path)
        m = self.model
        directory = "" if op.path == "." else op.path
        for change in m.pending:
            if change.directory == directory:
                _apply(m.durable, change)
        m.pending = tuple(c for c in m.pending if c.directory != directory)

    # -- crash states
    def model_at(self, point: int) -> Model:
        """The model just before operation ``point`` (``len(ops)``: after the last one)."""
        return self.before[point] if point < len(self.ops) else self.model

    def crash_states(self, point: int, rng: random.Random, extra: int = 2) -> list[CrashState]:
        """Bounded set of the disk states a power cut just before operation ``point`` may
        leave: all unsynced lost, all kept, each unsynced item alone lost (or torn) or alone
        kept, and ``extra`` random choices."""
        m = self.model_at(point)
        names = [f"dir #{c.index}" for c in m.pending]
        reachable = set(m.durable.values()) | {i for c in m.pending for _, i in c.names if i}
        dirty = sorted(i for i in reachable if m.inodes[i].durable != m.inodes[i].data)
        names += [f"data of inode {i}" for i in dirty]
        n_dir = len(m.pending)
        # A choice: per directory operation 1 kept / 0 lost; per dirty inode 1 new data,
        # 0 last synced data, 2 torn new data.
        choices: dict[tuple[int, ...], str] = {}
        keep = tuple([1] * len(names))
        lose = tuple([0] * len(names))
        choices.setdefault(keep, "all kept")
        choices.setdefault(lose, "all unsynced lost")
        for k, name in enumerate(names):
            flips = (0, 2) if k >= n_dir else (0,)
            for f in flips:
                c = list(keep)
                c[k] = f
                choices.setdefault(tuple(c), f"{name} {'torn' if f == 2 else 'lost'}")
            c = list(lose)
            c[k] = 1
            choices.setdefault(tuple(c), f"only {name} kept")
        for _ in range(extra if names else 0):
            r = tuple(
                rng.randrange(2) if k < n_dir else rng.randrange(3) for k in range(len(names))
            )
            choices.setdefault(r, "random: " + ",".join(map(str, r)))
        return [
            CrashState(
                point,
                label,
                _disk(m, choice[:n_dir], dict(zip(dirty, choice[n_dir:], strict=True))),
            )
            for choice, label in choices.items()
        ]

    def random_states(self, rng: random.Random, count: int) -> Iterator[CrashState]:
        """``count`` crashes at random points, each with a random choice of lost items."""
        for _ in range(count):
            point = rng.randrange(len(self.ops) + 1)
            m = self.model_at(point)
            kept = tuple(rng.randrange(2) for _ in m.pending)
            data = {i: rng.randrange(3) for i in m.inodes}
            yield CrashState(point, "random point", _disk(m, kept, data))


def _apply(names: dict[str, int], change: DirOp) -> None:
    for name, ino in change.names:
        if ino is None:
            names.pop(name, None)
        else:
            names[name] = ino


def _disk(m: Model, kept: tuple[int, ...], data: dict[int, int]) -> tuple[tuple[str, bytes], ...]:
    names = dict(m.durable)
    for change, k in zip(m.pending, kept, strict=True):
        if k:
            _apply(names, change)
    files = []
    for name, ino in sorted(names.items()):
        inode = m.inodes[ino]
        choice = data.get(ino, 1) if inode.durable != inode.data else 1
        if choice == 1:
            content = inode.data
        elif choice == 2:
            content = inode.data[: len(inode.data) // 2]
        else:
            content = inode.durable or b""
        files.append((name, content))
    return tuple(files)


def materialise(state: CrashState, where: Path) -> Path:
    """Write the files of ``state`` into a fresh directory ``where``."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for name, content in state.files:
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return where


def recording(flash: CrashFS, run: Callable[[], None]) -> None:
    """Run ``run`` with the agent's flash writes going through ``flash``."""
    from chargeward.agent import storage

    old = storage.set_flash(flash)
    try:
        run()
    finally:
        storage.set_flash(old)
