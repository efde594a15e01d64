"""``chargeward factory provision|verify`` and ``agent factory-reset`` through the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.agent.credentials import CredentialStore
from chargeward.agent.state import StateDir
from chargeward.cli.main import app, exit_code_for
from chargeward.crypto import certificate_pem, create_root_ca, generate_key
from chargeward.crypto.sealing import derive_device_key
from chargeward.errors import ChargewardError, ConfigError, CredentialStoreError
from tests.support.cli_runner import RUNNER_PASSPHRASE, ok
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import TufRepo


@pytest.fixture
def line(runner: CliRunner, tmp_path: Path) -> list[str]:
    """Files of a production line in the runner's directory; returns the provision options."""
    pki = Pki.create(tmp_path / "pki")
    pki.bundle(tmp_path / "factory.cwb", "1.0.0", 1)
    ca_key = generate_key("file:ca.key", RUNNER_PASSPHRASE.encode)
    (tmp_path / "ca.pem").write_text(certificate_pem(create_root_ca(ca_key, "Charger CA", "ACME")))
    csms_key = generate_key("file:csms.key", RUNNER_PASSPHRASE.encode)
    (tmp_path / "csms.pem").write_text(certificate_pem(create_root_ca(csms_key, "CSMS", "ACME")))
    (tmp_path / "root.json").write_bytes(TufRepo().root_json())
    (tmp_path / "product.secret").write_bytes(os.urandom(32))
    return [
        *("--model", MODEL, "--vendor", "ACME", "--customer", "acme"),
        *("--ca-cert", "ca.pem", "--ca-key", "file:ca.key"),
        *("--manufacturer-root", str(pki.root_pem), "--tuf-root", "root.json"),
        *("--csms-root", "csms.pem", "--factory-bundle", "factory.cwb"),
        *("--product-secret-file", "product.secret", "--workers", "1"),
    ]


def _fails(runner: CliRunner, *args: str) -> BaseException:
    result = runner.invoke(app, list(args))
    assert result.exit_code != 0
    assert result.exception is not None
    return result.exception


def test_provision_verify_and_factory_reset(
    runner: CliRunner, line: list[str], tmp_path: Path
) -> None:
    output = ok(
        runner, "factory", "provision", "--count", "3", "--prefix", "CP-", *line, "--out", "out"
    )
    assert "provisioned 3 chargers" in output
    doc = json.loads((tmp_path / "out" / "registration.json").read_text())
    serials = [s["serial_number"] for s in doc["stations"]]
    assert serials == ["CP-000001", "CP-000002", "CP-000003"]
    secret = (tmp_path / "product.secret").read_bytes()
    registration = (tmp_path / "out" / "registration.json").read_text()
    for serial in serials:
        key = derive_device_key(secret, serial)
        creds = CredentialStore(tmp_path / "out" / serial, serial, key=key).load()
        for value in creds.values():
            assert value not in registration and value not in output

    state = StateDir(tmp_path / "out" / "CP-000001")
    password = state.password()
    assert "credentials open" in ok(
        runner,
        "factory",
        "verify",
        "--state-dir",
        str(state.root),
        "--product-secret-file",
        "product.secret",
    )
    state.set_password("changed-by-an-operator-1")
    ok(runner, "agent", "factory-reset", "--state-dir", str(state.root), "--yes")
    assert state.password() == password


def test_wrong_product_secret_gives_one_clear_error(
    runner: CliRunner, line: list[str], tmp_path: Path
) -> None:
    ok(runner, "factory", "provision", "--count", "1", *line, "--out", "out")
    (tmp_path / "other.secret").write_bytes(os.urandom(32))
    error = _fails(
        runner,
        "factory",
        "verify",
        "--state-dir",
        "out/CP-000001",
        "--product-secret-file",
        "other.secret",
    )
    assert isinstance(error, CredentialStoreError)
    assert "cannot open the current credentials of CP-000001" in str(error)
    assert exit_code_for(error) == 3
    (tmp_path / "short.secret").write_bytes(b"too short")
    error = _fails(
        runner,
        "factory",
        "verify",
        "--state-dir",
        "out/CP-000001",
        "--product-secret-file",
        "short.secret",
    )
    assert isinstance(error, ConfigError) and "32 bytes" in str(error)


def test_serials_come_from_a_file_or_a_count_not_both(
    runner: CliRunner, line: list[str], tmp_path: Path
) -> None:
    (tmp_path / "serials.txt").write_text("# line 4\nSN-A1\n\nSN-A2\n")
    ok(runner, "factory", "provision", "--serials", "serials.txt", *line, "--out", "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "SN-A1",
        "SN-A2",
        "registration.json",
    ]
    error = _fails(
        runner,
        "factory",
        "provision",
        "--serials",
        "serials.txt",
        "--count",
        "2",
        *line,
        "--out",
        "o2",
    )
    assert isinstance(error, ConfigError)
    error = _fails(
        runner, "factory", "provision", "--serials", "serials.txt", *line, "--out", "out"
    )
    assert isinstance(error, ChargewardError) and "provisioned once" in str(error)
