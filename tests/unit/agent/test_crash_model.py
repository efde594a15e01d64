"""The crash model of the charger's flash (``tests.support.crashfs``): what it says a power cut
may leave, for the storage module's own writes."""

from __future__ import annotations

import random
from pathlib import Path

from chargeward.agent import storage
from tests.support.crashfs import CrashFS, materialise, recording


def disks(flash: CrashFS, point: int) -> set[tuple[tuple[str, bytes], ...]]:
    return {s.files for s in flash.crash_states(point, random.Random(1))}


def test_a_synced_atomic_write_survives_and_a_crash_before_it_keeps_the_old_content(
    tmp_path: Path,
) -> None:
    (tmp_path / "boot.json").write_bytes(b"old")
    flash = CrashFS(tmp_path)
    recording(flash, lambda: storage.atomic_write(tmp_path / "boot.json", b"new"))
    assert [o.kind for o in flash.ops] == ["makedirs", "write", "fsync_file", "rename", "fsync_dir"]
    ends = {
        dict(files).get("boot.json") for p in range(len(flash.ops) + 1) for files in disks(flash, p)
    }
    assert ends == {b"old", b"new"}  # never empty, never torn
    assert {dict(f)["boot.json"] for f in disks(flash, len(flash.ops))} == {b"new"}


def test_without_the_data_fsync_a_renamed_file_may_be_empty_or_torn(tmp_path: Path) -> None:
    (tmp_path / "boot.json").write_bytes(b"old")
    flash = CrashFS(tmp_path, skip_sites={"atomic_write"})
    recording(flash, lambda: storage.atomic_write(tmp_path / "boot.json", b"new!"))
    assert {dict(f)["boot.json"] for f in disks(flash, len(flash.ops))} == {b"new!", b"", b"ne"}


def test_without_the_directory_fsync_the_rename_may_be_lost(tmp_path: Path) -> None:
    (tmp_path / "boot.json").write_bytes(b"old")
    flash = CrashFS(tmp_path, skip_sites={"_commit"})
    recording(flash, lambda: storage.atomic_write(tmp_path / "boot.json", b"new"))
    assert {dict(f)["boot.json"] for f in disks(flash, len(flash.ops))} == {b"old", b"new"}
    # ... and a durable remove is durable; an unsynced one may come back.
    flash = CrashFS(tmp_path)
    recording(flash, lambda: storage.remove(tmp_path / "boot.json"))
    assert {"boot.json" in dict(f) for f in disks(flash, len(flash.ops))} == {False}
    assert {"boot.json" in dict(f) for f in disks(flash, len(flash.ops) - 1)} == {True, False}


def test_states_materialise_into_a_fresh_directory(tmp_path: Path) -> None:
    (tmp_path / "flash" / "slots").mkdir(parents=True)
    (tmp_path / "flash" / "slots" / "slot.json").write_bytes(b"{}")
    flash = CrashFS(tmp_path / "flash")
    state = next(flash.random_states(random.Random(2), 1))
    where = materialise(state, tmp_path / "crash")
    assert (where / "slots" / "slot.json").read_bytes() == b"{}"
