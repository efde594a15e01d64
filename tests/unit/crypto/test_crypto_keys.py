"""Private keys by URI: creation, protection at rest and loading."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from chargeward.crypto.keys import (
    generate_key,
    load_signer,
    normalise_uri,
    passphrase_from_env,
    public_key_fingerprint,
    public_key_pem,
)
from chargeward.crypto.pki import create_root_ca
from chargeward.crypto.signature import (
    sha256_bytes,
    sign_firmware_digest,
    verify_firmware_signature,
)
from chargeward.errors import BadSignature, ConfigError, KeyAccessError

PASSPHRASE = b"correct horse battery staple"


def passphrase() -> bytes:
    return PASSPHRASE


def test_generated_key_loads_back_and_its_signatures_verify(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'k.pem'}"
    created = generate_key(uri, passphrase)
    loaded = load_signer(uri, passphrase)
    assert loaded.uri == created.uri == normalise_uri(uri)
    assert public_key_fingerprint(loaded.public_key()) == public_key_fingerprint(
        created.public_key()
    )
    certificate = create_root_ca(loaded, "Test", "Test")
    digest = sha256_bytes(b"firmware image")
    verify_firmware_signature(certificate, digest, sign_firmware_digest(loaded, digest))
    verify_firmware_signature(certificate, digest, sign_firmware_digest(created, digest))
    with pytest.raises(BadSignature):
        verify_firmware_signature(
            certificate, sha256_bytes(b"other image"), sign_firmware_digest(loaded, digest)
        )


def test_bare_path_and_file_uri_name_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), passphrase)
    assert load_signer(f"file://{path}", passphrase).uri == f"file:{path.resolve()}"


def test_sign_digest_refuses_anything_but_a_sha256_digest(tmp_path: Path) -> None:
    signer = generate_key(str(tmp_path / "k.pem"), passphrase)
    with pytest.raises(ValueError, match="SHA-256"):
        signer.sign_digest(b"not a digest")
    assert signer.sign_digest(hashlib.sha256(b"x").digest())


def test_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "k.pem")
    generate_key(uri, passphrase)
    with pytest.raises(KeyAccessError, match="wrong passphrase"):
        load_signer(uri, lambda: b"not the passphrase at all")


def test_key_file_is_encrypted_and_private(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), passphrase)
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN CHARGEWARD ENCRYPTED PRIVATE KEY-----")
    assert PASSPHRASE not in pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_plaintext_key_is_refused_even_with_a_passphrase(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "plain.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyAccessError, match="plaintext keys are refused"):
        load_signer(str(path), passphrase)


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = generate_key(str(path), passphrase)
    before = path.read_bytes()
    with pytest.raises(KeyAccessError, match="refusing to overwrite"):
        generate_key(str(path), passphrase)
    assert path.read_bytes() == before
    again = load_signer(str(path), passphrase)
    assert public_key_pem(again.public_key()) == public_key_pem(first.public_key())


def test_short_passphrase_is_refused_and_no_file_written(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    with pytest.raises(ConfigError, match="at least 12"):
        generate_key(str(path), lambda: b"short")
    assert not path.exists()


@pytest.mark.parametrize("uri", ["s3:bucket/key.pem", "https://example.com/key.pem"])
def test_unknown_uri_scheme_is_refused(uri: str) -> None:
    with pytest.raises(KeyAccessError, match="unsupported key URI scheme"):
        load_signer(uri, passphrase)
    with pytest.raises(KeyAccessError, match="unsupported key URI scheme"):
        generate_key(uri, passphrase)


def test_missing_key_file_is_a_key_access_error(tmp_path: Path) -> None:
    with pytest.raises(KeyAccessError, match="cannot read key file"):
        load_signer(str(tmp_path / "absent.pem"), passphrase)


def test_env_passphrase_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGEWARD_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyAccessError, match="CHARGEWARD_KEY_PASSPHRASE"):
        passphrase_from_env()()
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", "from the environment")
    assert passphrase_from_env()() == b"from the environment"
