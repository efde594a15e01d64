"""The approver-key registry: bindings from root owner labels, rebinding, retiring, the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select
from tuf.api.metadata import Root
from typer.testing import CliRunner

from chargeward.audit.tables import AuditEntry
from chargeward.cli.main import app
from chargeward.errors import ConfigError
from chargeward.publish.roles import RootPlan, new_root
from chargeward.server.rollout import approver_keys
from chargeward.server.store.db import Database
from chargeward.trust.tuf_keys import tuf_key
from tests.support.fleet import TEST_PASSPHRASE
from tests.support.trust import TufKeys

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TufKeys:
    return TufKeys.create(tmp_path_factory.mktemp("registry-keys"))


def _root(keys: TufKeys, *approvers: str) -> Root:
    return new_root(
        RootPlan(
            root_keys=[keys.tuf("ana").public_key],
            root_threshold=1,
            targets_keys=[keys.tuf(n).public_key for n in approvers],
            targets_threshold=1,
            snapshot_key=keys.tuf("snapshot").public_key,
            timestamp_key=keys.tuf("timestamp").public_key,
        ),
        now=NOW,
    ).signed


def test_bindings_refuse_what_cannot_be_one_account_per_person(keys: TufKeys) -> None:
    root = _root(keys, "alice", "bob")
    found = approver_keys.root_bindings(root, {"bob": "robert"})
    assert [(b.label, b.account) for b in found] == [("alice", "alice"), ("bob", "robert")]
    with pytest.raises(ConfigError, match="account alice would hold two targets keys"):
        approver_keys.root_bindings(root, {"bob": "alice"})
    with pytest.raises(ConfigError, match="names no targets key of the root: carol"):
        approver_keys.root_bindings(root, {"carol": "carol"})
    odd = tuf_key(keys.signers["carol"].public_key(), owner="Carol S")
    with pytest.raises(ConfigError, match='map it with --account "Carol S=ACCOUNT"'):
        approver_keys.bindings([odd])
    unnamed = tuf_key(keys.signers["carol"].public_key())
    with pytest.raises(ConfigError, match="names no owner"):
        approver_keys.bindings([unnamed])


async def test_register_binds_rebinds_and_retires_with_an_audit_entry(
    keys: TufKeys, tmp_path: Path
) -> None:
    db = await Database.open(data_dir=tmp_path)
    try:
        async with db.session() as s:
            found = approver_keys.root_bindings(_root(keys, "alice", "bob"))
            await approver_keys.register(s, 1, found, actor="ana", now=NOW)
        later = NOW + dt.timedelta(days=1)
        async with db.session() as s:
            assert set((await approver_keys.bound_accounts(s)).values()) == {"alice", "bob"}
            found = approver_keys.root_bindings(_root(keys, "bob", "carol"), {"bob": "robert"})
            await approver_keys.register(s, 2, found, actor="ben", now=later)
        async with db.session() as s:
            bound = await approver_keys.bound_accounts(s)
            assert bound == {
                keys.tuf("bob").public_key.keyid: "robert",
                keys.tuf("carol").public_key.keyid: "carol",
            }
            rows = {r.label: r for r in await approver_keys.list_keys(s)}
            assert rows["alice"].retired_at == later and rows["bob"].root_version == 2
            entries = (
                await s.scalars(
                    select(AuditEntry).where(AuditEntry.action == "repo.approver_keys_registered")
                )
            ).all()
        assert [e.actor for e in entries] == ["ana", "ben"]
        changed = entries[1].details["changed"]
        assert changed[keys.tuf("bob").public_key.keyid] == "bound to robert (was bound to bob)"
        assert changed[keys.tuf("alice").public_key.keyid] == "retired (was bound to alice)"
    finally:
        await db.close()


def test_register_keys_binds_an_existing_repository(
    keys: TufKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    data = tmp_path / "srv"
    keys.init_repo(data / "tuf", NOW)  # made without the registry (an older repository)
    runner = CliRunner()
    result = runner.invoke(
        app, ["repo", "register-keys", "--data-dir", str(data), "--account", "carol=cs"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "(carol) is held by account cs" in result.output
    listed = runner.invoke(app, ["repo", "approver-keys", "--data-dir", str(data)])
    assert listed.exit_code == 0, (listed.output, listed.exception)
    assert "in service" in listed.output and "cs" in listed.output
