"""The ``chargeward`` command line: keys, PKI and release commands end to end."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto.pki import load_certificate_file, verify_firmware_signing_certificate
from chargeward.errors import ConfigError, Conflict, UntrustedCertificate
from chargeward.release.bundle import read_manifest
from tests.support.cli_runner import make_root, ok

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def released(runner: CliRunner, tmp_path: Path) -> Path:
    """root.pem, signing.pem and release.cwb made through the CLI."""
    make_root(runner, "ACME")
    ok(
        runner,
        *("pki", "issue-signing", "--ca-key", "keys/ACME.key", "--ca-cert", "ACME.pem"),
        *("--key", "file:keys/signing.key", "--out", "signing.pem", "--generate-key"),
        *("--cn", "ACME Firmware Signing", "--org", "ACME"),
    )
    (tmp_path / "firmware.bin").write_bytes(os.urandom(50_000))
    ok(
        runner,
        *("release", "build", "--image", "firmware.bin", "--version", "1.2.0"),
        *("--security-version", "3", "--model", "AC22", "--model", "AC11"),
        *("--signing-key", "keys/signing.key", "--signing-cert", "signing.pem"),
        *("--out", "release.cwb", "--notes", "[bold]markup is shown as text[/]"),
    )
    return tmp_path / "release.cwb"


def test_keys_generate_and_show(runner: CliRunner, tmp_path: Path) -> None:
    out = ok(runner, "keys", "generate", "file:keys/a.key")
    key = tmp_path / "keys" / "a.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert f"file:{key}" in out
    fingerprint = out.split("Public key SHA-256: ")[1].split()[0]
    assert len(fingerprint) == 64
    shown = ok(runner, "keys", "show", "keys/a.key")
    assert fingerprint in shown
    assert "-----BEGIN PUBLIC KEY-----" in shown


def test_keys_generate_never_overwrites(runner: CliRunner, tmp_path: Path) -> None:
    ok(runner, "keys", "generate", "keys/a.key")
    before = (tmp_path / "keys" / "a.key").read_bytes()
    result = runner.invoke(app, ["keys", "generate", "keys/a.key"])
    assert result.exit_code != 0
    assert (tmp_path / "keys" / "a.key").read_bytes() == before


def test_pki_commands_produce_a_valid_chain(released: Path, tmp_path: Path) -> None:
    root = load_certificate_file(tmp_path / "ACME.pem")
    signing = load_certificate_file(tmp_path / "signing.pem")
    assert verify_firmware_signing_certificate(signing, [root]) == root
    assert stat.S_IMODE((tmp_path / "keys" / "signing.key").stat().st_mode) == 0o600


def test_pki_show(runner: CliRunner, released: Path) -> None:
    out = ok(runner, "pki", "show", "signing.pem")
    assert "CN=ACME Firmware Signing" in out
    assert "CN=ACME Manufacturer Root CA" in out
    assert "digital_signature" in out
    assert "codeSigning" in out
    assert "valid now" in out


def test_pki_init_root_refuses_existing_output(runner: CliRunner, tmp_path: Path) -> None:
    make_root(runner, "ACME")
    before = (tmp_path / "ACME.pem").read_bytes()
    args = ["pki", "init-root", "--key", "keys/new.key", "--generate-key", "--out", "ACME.pem"]
    result = runner.invoke(app, [*args, "--cn", "X", "--org", "X"])
    assert isinstance(result.exception, Conflict)
    assert (tmp_path / "ACME.pem").read_bytes() == before
    assert not (tmp_path / "keys" / "new.key").exists()


def test_release_build_verify_show(runner: CliRunner, released: Path) -> None:
    manifest = read_manifest(released)
    assert manifest.version == "1.2.0"
    assert manifest.hardware_models == ("AC11", "AC22")
    assert manifest.notes == "[bold]markup is shown as text[/]"

    out = ok(runner, "release", "verify", "release.cwb", "--root", "ACME.pem")
    assert "verified" in out
    assert manifest.release_id in out

    shown = ok(runner, "release", "show", "release.cwb")
    assert "NOT VERIFIED" in shown
    assert "verified:" not in shown
    assert "[bold]markup is shown as text[/]" in shown


def test_release_verify_with_wrong_root_fails(runner: CliRunner, released: Path) -> None:
    make_root(runner, "Other")
    result = runner.invoke(app, ["release", "verify", "release.cwb", "--root", "Other.pem"])
    assert result.exit_code != 0
    assert isinstance(result.exception, UntrustedCertificate)
    assert "release.cwb: signing certificate is not issued by an installed root" in str(
        result.exception
    )
    assert "verified" not in result.output


def _chargeward(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARGEWARD_KEY_PASSPHRASE": PASSPHRASE, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "chargeward", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exit_codes_and_clean_errors(runner: CliRunner, released: Path, tmp_path: Path) -> None:
    make_root(runner, "Other")
    untrusted = _chargeward(tmp_path, "release", "verify", "release.cwb", "--root", "Other.pem")
    assert untrusted.returncode == 3
    assert untrusted.stderr.splitlines() == [
        "error: release.cwb: signing certificate is not issued by an installed root"
    ]
    assert "verified" not in untrusted.stdout

    (tmp_path / "odd[").mkdir()
    (tmp_path / "odd[" / "x].cwb").write_bytes(b"this is not a bundle" * 100)
    junk = _chargeward(tmp_path, "release", "verify", "odd[/x].cwb", "--root", "ACME.pem")
    assert junk.returncode == 6
    [line] = junk.stderr.splitlines()
    assert line.startswith("error: odd[/x].cwb is not an uncompressed tar bundle: ")
    assert "Traceback" not in junk.stderr + untrusted.stderr


def test_missing_root_file_is_a_config_error(runner: CliRunner, released: Path) -> None:
    result = runner.invoke(app, ["release", "verify", "release.cwb", "--root", "absent.pem"])
    assert isinstance(result.exception, ConfigError)
    assert "cannot read certificate file absent.pem" in str(result.exception)


def test_key_pki_and_release_operations_are_audited(released: Path, tmp_path: Path) -> None:
    import asyncio

    from chargeward import audit
    from chargeward.server.store.db import Database

    async def read() -> list[audit.Entry]:
        db = await Database.open(data_dir=tmp_path / "chargeward-data")
        try:
            async with db.session() as s:
                return await audit.entries(s)
        finally:
            await db.close()

    entries = asyncio.run(read())
    assert [e.action for e in entries] == [
        "pki.root_ca_created",
        "pki.signing_certificate_issued",
        "release.build",
    ]
    build = entries[-1]
    assert build.details["version"] == "1.2.0"
    assert build.details["hardware_models"] == ["AC11", "AC22"]
    assert str(build.details["signing_key"]).endswith("keys/signing.key")
    assert entries[1].details["key_generated"] is True
