"""``chargeward repo``: init, status, root export and a timestamp-key rotation, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Timestamp
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.publish import ImageRepository
from tests.support.cli_runner import ok
from tests.support.fleet import TEST_PASSPHRASE
from tests.support.trust import TufKeys


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TufKeys:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    return TufKeys.create(tmp_path / "keys")


def test_init_status_export_and_timestamp_key_rotation(
    runner: CliRunner, keys: TufKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    data = tmp_path / "srv"
    out = ok(runner, *keys.init_args(data, tmp_path / "root.json"))
    assert "root 2 of 3, release approval 2 of 3" in out
    first = Metadata[Root].from_bytes((tmp_path / "root.json").read_bytes())
    owners = {
        k.unrecognized_fields["x-chargeward-owner"]
        for k in first.signed.keys.values()
        if "x-chargeward-owner" in k.unrecognized_fields
    }
    assert owners == {"ana", "ben", "cyd", "alice", "bob", "carol"}

    status = runner.invoke(app, ["repo", "status", "--data-dir", str(data), "--check"])
    assert status.exit_code == 0, status.output
    assert "timestamp" in status.output and "ok" in status.output

    # A compromised timestamp key is replaced by root v2, signed by 2 of the 3 root holders.
    new_ts = keys.add("timestamp-2")
    out = ok(
        runner,
        *("repo", "rotate-root", "--data-dir", str(data), "--timestamp-key", new_ts.uri),
        *("--sign-with", keys.uri("ana"), "--sign-with", keys.uri("cyd")),
    )
    assert "published root version 2" in out
    repo = ImageRepository(data / "tuf")
    root = repo.root().signed
    ts = repo.timestamp()
    root.verify_delegate(Timestamp.type, ts.signed_bytes, ts.signatures)
    assert json.loads((data / "tuf" / "online-keys.json").read_text())["timestamp"] == new_ts.uri
    # The old root accepts the new one: chargers follow the chain.
    v2 = repo.root()
    first.signed.verify_delegate(Root.type, v2.signed_bytes, v2.signatures)

    exported = tmp_path / "root-v2.json"
    ok(runner, "repo", "root", "--data-dir", str(data), "--out", str(exported))
    assert Metadata[Root].from_bytes(exported.read_bytes()).signed.version == 2


def test_rotation_signed_by_one_holder_is_refused(
    runner: CliRunner, keys: TufKeys, tmp_path: Path
) -> None:
    data = tmp_path / "srv"
    ok(runner, *keys.init_args(data))
    result = runner.invoke(
        app,
        [
            "repo",
            "rotate-root",
            "--data-dir",
            str(data),
            "--root-threshold",
            "1",
            "--sign-with",
            keys.uri("ana"),
        ],
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception)
    assert "not signed by the current root keys" in str(result.exception)
    assert ImageRepository(data / "tuf").root().signed.version == 1


def test_bad_key_spec_and_unsatisfiable_threshold_are_clear(
    runner: CliRunner, keys: TufKeys, tmp_path: Path
) -> None:
    data = tmp_path / "srv"
    args = keys.init_args(data)
    bad = [a if not a.startswith("alice=") else keys.uri("alice") for a in args]
    result = runner.invoke(app, bad)
    assert "must be given as OWNER=KEY-URI" in str(result.exception)
    result = runner.invoke(app, [*args, "--targets-threshold", "4"])
    assert "threshold 4 is more than its 3" in str(result.exception)
    assert not (data / "tuf" / "metadata" / "1.root.json").exists()
