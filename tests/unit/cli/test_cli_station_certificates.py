"""``chargeward station register-certificate / revoke-certificate / crl`` against the real API
served over HTTP on 127.0.0.1 (ADR 0022)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto import certificate_pem
from chargeward.crypto.pki import verify_crl
from chargeward.server.fleet import station_registry
from tests.support.accounts_api import AccountsApi
from tests.support.served_api import served_api
from tests.support.tls import TlsPki

pytestmark = pytest.mark.timeout(60)


def test_register_revoke_and_export_the_crl(tmp_path: Path, tls_pki: TlsPki) -> None:
    first = tls_pki.station_cert("CP-CLI", name="cli-first")
    second = tls_pki.station_cert("CP-CLI", name="cli-second")
    foreign = TlsPki.create(tmp_path / "other").station_cert("CP-CLI")

    at = dt.datetime.now(dt.UTC)  # the test PKI was made just now

    async def seed(env: AccountsApi) -> str:
        env.clock.now = at
        env.state.charger_ca = tls_pki.charger_ca()
        async with env.state.db.session() as s:
            await station_registry.register_station(
                s, "CP-CLI", actor="test", password="p" * 20, now=at
            )
        return env.admin_token

    with served_api(tmp_path / "srv", seed) as (url, token):
        runner = CliRunner(env={"CHARGEWARD_API_TOKEN": token})

        def run(*args: str) -> tuple[int, str]:
            result = runner.invoke(app, ["station", *args, "--server", url])
            return result.exit_code, result.output + repr(result.exception)

        code, out = run("register-certificate", "CP-CLI", str(first.chain))
        assert code == 0, out
        assert f"certificate {first.cert.serial_number:x}" in out
        code, out = run("register-certificate", "CP-CLI", str(second.chain))
        assert code == 0, out
        # Not from the charger CA: refused in one line, nothing changes.
        code, out = run("register-certificate", "CP-CLI", str(foreign.chain))
        assert code != 0 and "not issued by the charger CA" in out and "Traceback" not in out
        code, out = run("revoke-certificate", "CP-CLI", "--reason", "nonsense")
        assert code != 0 and "unknown reason" in out
        code, out = run("revoke-certificate", "CP-CLI", "--reason", "keyCompromise")
        assert code == 0, out
        assert f"certificate {second.cert.serial_number:x} revoked (keyCompromise)" in out
        code, out = run("revoke-certificate", "CP-CLI", "--reason", "keyCompromise")
        assert code != 0 and "already revoked" in out
        crl_file = tmp_path / "charger-ca.crl"
        code, out = run("crl", "--out", str(crl_file))
        assert code == 0, out
    crl = verify_crl(crl_file.read_bytes(), [tls_pki.ca], now=at)
    listed = {(e.serial, e.reason) for e in crl.entries}
    assert listed == {
        (first.cert.serial_number, "superseded"),  # retired when the second was registered
        (second.cert.serial_number, "keyCompromise"),
    }
    assert certificate_pem(first.cert)  # the files the CLI read are real certificates


def test_station_add_with_profile_3_needs_its_certificate(tmp_path: Path, tls_pki: TlsPki) -> None:
    own = tls_pki.station_cert("CP-ADD3", name="cli-add3")
    other = tls_pki.station_cert("CP-OTHER3", name="cli-other3")
    runner = CliRunner()
    base = ["station", "add", "--data-dir", str(tmp_path), "--security-profile", "3"]
    refused = runner.invoke(app, [*base, "CP-ADD3"])
    assert refused.exit_code != 0 and "no registered station certificate" in str(refused.exception)
    wrong = runner.invoke(app, [*base, "CP-ADD3", "--certificate", str(other.chain)])
    assert wrong.exit_code != 0 and "certificate CN is not CP-ADD3" in str(wrong.exception)
    ok = runner.invoke(app, [*base, "CP-ADD3", "--certificate", str(own.chain)])
    assert ok.exit_code == 0, ok.output
    assert "registered CP-ADD3" in ok.output
