"""Key files: scrypt and AES-256-GCM around PKCS#8, the old PBKDF2 format, and ``keys rewrap``."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from typer.testing import CliRunner

from chargeward.cli.main import app, exit_code_for
from chargeward.crypto import keyfile
from chargeward.crypto.ed25519 import load_ed25519_signer
from chargeward.crypto.keys import generate_key, load_signer, rewrap_key_file
from chargeward.errors import KeyAccessError
from tests.support.fleet import cli

PASSPHRASE = b"correct horse battery staple"


def passphrase() -> bytes:
    return PASSPHRASE


def _blob(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def _header(pem: bytes) -> dict[str, object]:
    der = _blob(pem)
    size = int.from_bytes(der[4:6], "big")
    fields: dict[str, object] = json.loads(der[6 : 6 + size])
    return fields


def _rearmour(der: bytes) -> bytes:
    body = base64.b64encode(der).decode()
    return (f"-----BEGIN {keyfile.LABEL}-----\n{body}\n-----END {keyfile.LABEL}-----\n").encode()


def _with_header(pem: bytes, **changes: object) -> bytes:
    """The file with its header fields changed (a well-formed file an attacker could make)."""
    der = _blob(pem)
    size = int.from_bytes(der[4:6], "big")
    fields = json.loads(der[6 : 6 + size]) | changes
    header = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return _rearmour(keyfile.MAGIC + len(header).to_bytes(2, "big") + header + der[6 + size :])


def legacy_key_file(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """A key file as Chargeward wrote it before: PKCS#8 PBES2, PBKDF2 (2,048 iterations)."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE),
        )
    )
    path.chmod(0o600)


def test_new_key_file_is_scrypt_not_pbkdf2(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), passphrase)
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN CHARGEWARD ENCRYPTED PRIVATE KEY-----\n")
    header = _header(pem)
    assert header["kdf"] == "scrypt" and header["aead"] == "aes-256-gcm"
    assert header["version"] == 1
    info = keyfile.describe(pem)
    assert info.kdf == "scrypt" and info.params == keyfile.params_for_writing()
    assert info.params is not None and info.params.memory >= keyfile.MIN_MEMORY
    assert len(info.salt) == 16 and len(info.nonce) == 12
    assert b"1.2.840.113549.1.5.12" not in pem and PASSPHRASE not in pem  # no PBKDF2 OID


def test_the_cost_of_new_files_can_be_set_and_a_bad_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    monkeypatch.setenv(keyfile.COST_ENV, "15")
    assert keyfile.describe(keyfile.wrap(key, PASSPHRASE)).params == keyfile.ScryptParams(n=2**15)
    for bad, why in [("abc", "whole number"), ("4", "less than the minimum"), ("40", "more than")]:
        monkeypatch.setenv(keyfile.COST_ENV, bad)
        with pytest.raises(KeyAccessError, match=why):
            keyfile.wrap(key, PASSPHRASE)


def test_default_parameters_are_owasp_scrypt() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = keyfile.wrap(key, PASSPHRASE, keyfile.DEFAULT_PARAMS)
    info = keyfile.describe(pem)
    assert info.params == keyfile.ScryptParams(n=2**17, r=8, p=1)
    assert info.params.memory == 128 << 20


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"n": 2**40}, "more than the 1024 MiB allowed"),
        ({"n": 2**20, "r": 32}, "more than the 1024 MiB allowed"),
        ({"n": 2**17, "p": 1 << 30}, "outside"),
        ({"n": 2**10}, "less than the minimum"),
        ({"n": 3}, "not a power of two"),
        ({"n": True}, "not an integer"),
    ],
)
def test_hostile_parameters_are_refused_before_scrypt_runs(
    tmp_path: Path, changes: dict[str, object], why: str
) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), passphrase)
    path.write_bytes(_with_header(path.read_bytes(), **changes))
    start = time.perf_counter()
    with pytest.raises(KeyAccessError, match=why):
        load_signer(str(path), passphrase)
    assert time.perf_counter() - start < 0.02  # refused without deriving, let alone 128 TiB


def test_old_pbkdf2_file_loads_with_a_warning_and_rewrap_converts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    legacy_key_file(path, key)
    assert keyfile.describe(path.read_bytes()).kdf == "pbkdf2"
    with caplog.at_level(logging.WARNING, logger="chargeward.crypto.keys"):
        old = load_signer(str(path), passphrase)
    assert f"chargeward keys rewrap file:{path}" in caplog.text
    digest = hashlib.sha256(b"firmware image").digest()
    before = old.sign_digest(digest)

    done = rewrap_key_file(f"file:{path}", passphrase)
    assert done.was.kdf == "pbkdf2" and done.now.kdf == "scrypt"
    assert keyfile.describe(path.read_bytes()).kdf == "scrypt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".old.pem.*"))  # no temporary file left behind
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="chargeward.crypto.keys"):
        new = load_signer(str(path), passphrase)
    assert "rewrap" not in caplog.text
    after = new.sign_digest(digest)
    assert new.public_key() == key.public_key()
    for signature in (before, after):  # raises InvalidSignature otherwise
        key.public_key().verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_rewrap_with_a_new_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = generate_key(str(path), passphrase)
    rewrap_key_file(str(path), passphrase, lambda: b"a new passphrase, long enough")
    with pytest.raises(KeyAccessError, match="wrong passphrase"):
        load_signer(str(path), passphrase)
    again = load_signer(str(path), lambda: b"a new passphrase, long enough")
    assert again.public_key() == first.public_key()


def test_rewrap_with_the_wrong_passphrase_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.pem"
    legacy_key_file(path, ec.generate_private_key(ec.SECP256R1()))
    before = path.read_bytes()
    with pytest.raises(KeyAccessError, match="wrong passphrase"):
        rewrap_key_file(str(path), lambda: b"not the passphrase at all")
    assert path.read_bytes() == before


@pytest.mark.parametrize("where", ["header", "ciphertext", "tag"])
def test_tampered_file_is_refused(tmp_path: Path, where: str) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), passphrase)
    pem = path.read_bytes()
    if where == "header":  # a well-formed header with another salt: authenticated data
        tampered = _with_header(pem, salt=base64.b64encode(bytes(16)).decode())
    else:
        der = bytearray(_blob(pem))
        der[-1 if where == "tag" else -20] ^= 1
        tampered = _rearmour(bytes(der))
    path.write_bytes(tampered)
    with pytest.raises(KeyAccessError, match="wrong passphrase or damaged file"):
        load_signer(str(path), passphrase)


def test_header_naming_other_algorithms_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), passphrase)
    pem = path.read_bytes()
    for changes in ({"kdf": "pbkdf2"}, {"aead": "none"}, {"version": 2}):
        path.write_bytes(_with_header(pem, **changes))
        with pytest.raises(KeyAccessError, match="unsupported"):
            load_signer(str(path), passphrase)


def test_ed25519_keys_use_the_same_format(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(keyfile.wrap(key, PASSPHRASE))
    signer = load_ed25519_signer(str(path), passphrase)
    assert signer.public_key_raw() == key.public_key().public_bytes_raw()


def test_cli_rewrap_converts_an_old_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "old.pem"
    path.parent.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    legacy_key_file(path, key)
    fingerprint = hashlib.sha256(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()
    result = runner.invoke(app, ["keys", "rewrap", "--keep-passphrase", f"file:{path}"])
    assert result.exit_code == 0, result.output
    assert "was: pkcs8-pbes2, pbkdf2" in result.output
    assert "now: chargeward-v1, scrypt" in result.output
    shown = runner.invoke(app, ["keys", "show", f"file:{path}"])
    assert fingerprint in shown.output
    assert "Protection: chargeward-v1, scrypt n=" in shown.output


def test_cli_rewrap_wrong_passphrase_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "old.pem"
    legacy_key_file(path, ec.generate_private_key(ec.SECP256R1()))
    before = path.read_bytes()
    r = cli(
        *("keys", "rewrap", "--keep-passphrase", str(path), "--data-dir", str(tmp_path / "d")),
        env={"CHARGEWARD_KEY_PASSPHRASE": "not the passphrase at all"},
        check=False,
    )
    assert r.returncode == 6  # KeyAccessError: bad input
    assert r.stderr.strip().splitlines() == [
        f"error: cannot open key file {path}: wrong passphrase or damaged file"
    ]
    assert path.read_bytes() == before


def test_cli_rewrap_without_a_new_passphrase_asks_for_one(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), passphrase)
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", PASSPHRASE.decode())
    monkeypatch.delenv("CHARGEWARD_NEW_KEY_PASSPHRASE", raising=False)
    before = path.read_bytes()
    result = runner.invoke(app, ["keys", "rewrap", str(path)])
    assert isinstance(result.exception, KeyAccessError)
    assert exit_code_for(result.exception) == 6
    assert "CHARGEWARD_NEW_KEY_PASSPHRASE" in str(result.exception)
    assert path.read_bytes() == before
    monkeypatch.setenv("CHARGEWARD_NEW_KEY_PASSPHRASE", "a new passphrase, long enough")
    assert runner.invoke(app, ["keys", "rewrap", str(path)]).exit_code == 0
    load_signer(str(path), lambda: b"a new passphrase, long enough")
