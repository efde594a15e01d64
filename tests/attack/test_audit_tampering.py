"""Attacks on the audit log by someone with write access to the database, caught offline.

Each test builds a log of 14 entries in a server data directory with checkpoints signed at
sizes 5 and 12 (the way the server's leader job signs them), plays the attacker directly on
the SQLite file (dropping the append-only triggers first), exports the log with
``chargeward audit export --offline`` and runs the real ``chargeward audit verify`` process
with the pinned verifier key.  An edit, a deletion, a swap and a full rewrite that recomputes
every stored hash and node are each refused with one line naming the first bad entry; the
untouched log verifies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward import audit
from chargeward.audit import log, merkle, tree
from chargeward.audit.checkpoint import Checkpoint, sign_checkpoint
from chargeward.cli.main import app
from chargeward.crypto.ed25519 import generate_ed25519_key
from chargeward.server.store.db import Database

NOW = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)
PASSPHRASE = "correct horse battery staple"
ORIGIN = "chargeward.test/audit"


@dataclass
class Log:
    data_dir: Path
    vkey: str
    kept: Path  # the checkpoint at size 12, as an auditor kept it outside the log

    @property
    def database(self) -> Path:
        return self.data_dir / "chargeward.db"

    def export(self, tmp: Path) -> Path:
        out = tmp / "export.jsonl"
        args = ["audit", "export", "--offline", "--data-dir", str(self.data_dir), "--out", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (result.output, result.exception)
        return out

    def verify(self, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "chargeward", "audit", "verify"),
                *(str(self.export(tmp)), "--vkey", self.vkey, *extra),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "300"},
            timeout=60,
            check=False,
        )


async def _build(data_dir: Path) -> None:
    db = await Database.open(data_dir=data_dir)
    signer = log.open_checkpoint_key(data_dir, lambda: PASSPHRASE.encode())
    (data_dir / log.VKEY_FILE).write_text(log.vkey_of(signer, ORIGIN).vkey + "\n")
    try:
        for n in range(14):
            async with db.session() as s:
                await audit.record(
                    s,
                    actor="alice",
                    action="release.upload" if n % 2 else "station.boot",
                    target=f"r{n}",
                    details={"n": n, "version": f"1.{n}.0"},
                    now=NOW + dt.timedelta(minutes=n),
                )
                if n + 1 in (5, 12):
                    await log.sign_checkpoint(s, signer, origin=ORIGIN, now=NOW)
    finally:
        await db.close()


@pytest.fixture
def built(tmp_path: Path) -> Log:
    data_dir = tmp_path / "data"
    asyncio.run(_build(data_dir))
    db = sqlite3.connect(data_dir / "chargeward.db")
    [note] = db.execute("SELECT note FROM audit_checkpoints WHERE size = 12").fetchone()
    db.close()
    kept = tmp_path / "published-12.note"
    kept.write_text(note)
    return Log(data_dir, (data_dir / log.VKEY_FILE).read_text().strip(), kept)


def attack(database: Path, *statements: str) -> None:
    """Run SQL as an attacker with database access: the append-only triggers go first."""
    db = sqlite3.connect(database)
    with db:
        db.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_entries_no_delete")
        for statement in statements:
            db.execute(statement)
    db.close()


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one clear line
    return lines[0]


def test_an_untouched_log_verifies(built: Log, tmp_path: Path) -> None:
    result = built.verify(tmp_path, "--checkpoint", str(built.kept))
    assert result.returncode == 0, result.stderr
    assert "verified 14 entries" in result.stdout
    assert "signed up to 12" in result.stdout


def test_editing_an_entrys_details_is_detected(built: Log, tmp_path: Path) -> None:
    attack(
        built.database,
        """UPDATE audit_entries SET details = '{"n": 7, "version": "6.6.6"}'
                              WHERE leaf_index = 7""",
    )
    line = refused(built.verify(tmp_path))
    assert "entry index 7 (id 8)" in line and "changed" in line


def test_deleting_an_entry_is_detected(built: Log, tmp_path: Path) -> None:
    attack(built.database, "DELETE FROM audit_entries WHERE leaf_index = 7")
    line = refused(built.verify(tmp_path))
    assert "entry index 8 (id 9)" in line and "entries 7..7 before it are missing" in line


def test_swapping_two_entries_is_detected(built: Log, tmp_path: Path) -> None:
    attack(
        built.database,  # entries 3 and 4 trade places (their leaf indexes and stored hashes)
        "UPDATE audit_entries SET leaf_index = -1 WHERE leaf_index = 3",
        "UPDATE audit_entries SET leaf_index = 3 WHERE leaf_index = 4",
        "UPDATE audit_entries SET leaf_index = 4 WHERE leaf_index = -1",
    )
    line = refused(built.verify(tmp_path))
    assert "entry index 3 (id 5)" in line


def _rewrite(database: Path, *, drop_checkpoints: bool) -> None:
    """Change entry 7, then recompute every leaf hash and every node consistently."""
    attack(
        database,
        """UPDATE audit_entries SET details = '{"n": 7, "version": "6.6.6"}'
           WHERE leaf_index = 7""",
    )

    async def recompute() -> None:
        db = await Database.open(data_dir=database.parent)
        try:
            async with db.session() as s:
                rows = await audit.entries(s, limit=100)
        finally:
            await db.close()
        forged = merkle.MemoryTree()
        hashes = []
        for r in rows:
            data = tree.leaf_of(vars(r), r.leaf_index)
            hashes.append((merkle.leaf_hash(data), r.id))
            forged.append(data)
        con = sqlite3.connect(database)
        with con:
            con.executemany("UPDATE audit_entries SET leaf_hash = ? WHERE id = ?", hashes)
            con.execute("DELETE FROM audit_nodes")
            nodes = [
                (level, index, forged.get(level, index))
                for level in range(5)
                for index in range(14 >> level)
            ]
            con.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
            if drop_checkpoints:  # and sign the rewritten log with a key of its own
                con.execute("DELETE FROM audit_checkpoints")
                mallory = generate_ed25519_key(
                    f"file:{database.parent / 'mallory.key'}", lambda: PASSPHRASE.encode()
                )
                note = sign_checkpoint(Checkpoint(ORIGIN, 14, merkle.root(14, forged)), mallory)
                con.execute(
                    "INSERT INTO audit_checkpoints (size, root_hash, note, created_at) "
                    "VALUES (14, ?, ?, '2026-12-08 10:00:00')",
                    (merkle.root(14, forged), note),
                )
        con.close()

    asyncio.run(recompute())


def test_a_rewrite_behind_a_published_checkpoint_is_detected(built: Log, tmp_path: Path) -> None:
    _rewrite(built.database, drop_checkpoints=False)
    line = refused(built.verify(tmp_path))
    assert "entries 5..11 do not match the checkpoint signed at size 12" in line
    assert "entry index 5 (id 6)" in line  # the first entry the rewrite may have touched


def test_a_rewrite_that_also_replaces_the_checkpoints_is_detected(
    built: Log, tmp_path: Path
) -> None:
    _rewrite(built.database, drop_checkpoints=True)
    line = refused(built.verify(tmp_path, "--checkpoint", str(built.kept)))
    assert "not trusted" in line  # the forged checkpoint is not signed by the pinned key
    # Without the forgery, the checkpoint kept outside the log still catches the rewrite.
    attack(built.database, "DELETE FROM audit_checkpoints")
    line = refused(built.verify(tmp_path, "--checkpoint", str(built.kept)))
    assert "do not match the checkpoint signed at size 12" in line
    assert "entry index 0 (id 1)" in line
