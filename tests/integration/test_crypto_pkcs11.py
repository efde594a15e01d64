"""HSM keys through PKCS#11, against a real SoftHSM2 token store per test (no mocks).

Proves that a key generated in the token cannot leave it, that token signatures verify with
``cryptography``, that the Root CA, firmware-signing certificate, firmware signature and a
release bundle can all be made with token keys (library and CLI), and that every misuse is
refused with a clear one-line reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto import (
    Pkcs11Signer,
    create_root_ca,
    describe_certificate,
    generate_key,
    issue_firmware_signing_certificate,
    key_attributes,
    load_certificate_file,
    load_signer,
    public_key_fingerprint,
    sha256_bytes,
    sign_firmware_digest,
    verify_firmware_signature,
    verify_firmware_signing_certificate,
)
from chargeward.crypto.keys import normalise_uri
from chargeward.crypto.pkcs11 import parse_pkcs11_uri
from chargeward.errors import BadSignature, KeyAccessError
from chargeward.release.bundle import read_manifest
from tests.support.softhsm import MODULE, TOKEN, USER_PIN, SoftHsm, use_softhsm

DIGEST = hashlib.sha256(b"firmware image").digest()


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    return use_softhsm(tmp_path / "softhsm", monkeypatch)


def verifies(key: ec.EllipticCurvePublicKey, signature: bytes, digest: bytes) -> bool:
    try:
        key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def never_asked() -> bytes:
    raise AssertionError("the PIN source must not be asked")


# --- keys inside the token --------------------------------------------------------------


def test_generated_key_is_sensitive_and_its_value_cannot_be_read(hsm: SoftHsm) -> None:
    signer = generate_key(hsm.uri("signing"), hsm.pin_source)
    protection = key_attributes(hsm.uri("signing"), hsm.pin_source)
    assert protection.sensitive is True
    assert protection.extractable is False
    assert protection.always_sensitive is True
    assert protection.never_extractable is True
    assert protection.non_extractable
    assert isinstance(signer, Pkcs11Signer)
    assert signer.protection() == protection

    with hsm.session() as session:  # ask the token directly, not through Chargeward
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="signing")
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label="signing")
        point = public[Attribute.EC_POINT]
    assert point[2:] == signer.public_key().public_bytes(  # DER OCTET STRING around the point
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def test_token_signature_verifies_with_cryptography(hsm: SoftHsm) -> None:
    created = generate_key(hsm.uri("signing"), hsm.pin_source)
    loaded = load_signer(hsm.uri("signing"), hsm.pin_source)
    assert loaded.uri == created.uri == f"pkcs11:token={TOKEN};object=signing"
    assert public_key_fingerprint(loaded.public_key()) == public_key_fingerprint(
        created.public_key()
    )
    signature = loaded.sign_digest(DIGEST)
    utils.decode_dss_signature(signature)  # DER ECDSA-Sig-Value, not the token's r || s
    assert verifies(created.public_key(), signature, DIGEST)
    assert not verifies(created.public_key(), signature, hashlib.sha256(b"other").digest())
    with pytest.raises(ValueError, match="SHA-256"):
        loaded.sign_digest(b"not a digest")


async def test_signing_from_threads(hsm: SoftHsm) -> None:
    signer = generate_key(hsm.uri("signing"), hsm.pin_source)
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(24)]
    signatures = await asyncio.gather(*(asyncio.to_thread(signer.sign_digest, d) for d in digests))
    assert all(
        verifies(signer.public_key(), s, d) for s, d in zip(signatures, digests, strict=True)
    )


def test_pki_and_firmware_signature_with_token_keys(hsm: SoftHsm) -> None:
    root_key = generate_key(hsm.uri("root-ca"), hsm.pin_source)
    signing_key = generate_key(hsm.uri("firmware-signing"), hsm.pin_source)
    root = create_root_ca(root_key, "ACME Manufacturer Root CA", "ACME")
    certificate = issue_firmware_signing_certificate(
        root_key, root, signing_key.public_key(), "ACME Firmware Signing", "ACME"
    )
    assert verify_firmware_signing_certificate(certificate, [root]) == root
    digest = sha256_bytes(b"firmware 1.2.0")
    signature = sign_firmware_digest(signing_key, digest)
    verify_firmware_signature(certificate, digest, signature)
    with pytest.raises(BadSignature):
        verify_firmware_signature(certificate, sha256_bytes(b"firmware 6.6.6"), signature)


def test_each_token_store_is_separate_within_one_process(
    hsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = generate_key(hsm.uri("signing"), hsm.pin_source)
    other = use_softhsm(tmp_path / "other-softhsm", monkeypatch)
    with pytest.raises(KeyAccessError, match="no private key labelled 'signing'"):
        load_signer(other.uri("signing"), other.pin_source)
    second = generate_key(other.uri("signing"), other.pin_source)
    assert public_key_fingerprint(second.public_key()) != public_key_fingerprint(first.public_key())
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.conf))
    assert verifies(first.public_key(), first.sign_digest(DIGEST), DIGEST)


def test_percent_encoded_labels_reach_the_token(hsm: SoftHsm) -> None:
    uri = f"pkcs11:object=ACME%20root%20CA%20%C3%BC%3B1;token={TOKEN}?module-path={MODULE}"
    signer = generate_key(uri, hsm.pin_source)
    assert signer.uri == f"pkcs11:token={TOKEN};object=ACME%20root%20CA%20%C3%BC%3B1" + (
        f"?module-path={MODULE}"
    )
    with hsm.session() as session:
        assert session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="ACME root CA ü;1")
    assert load_signer(signer.uri, hsm.pin_source).public_key() == signer.public_key()


def test_pin_from_the_environment_wins(hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEWARD_PKCS11_PIN", USER_PIN)
    signer = generate_key(hsm.uri("signing"), never_asked)
    assert load_signer(signer.uri, never_asked).public_key() == signer.public_key()


# --- refusals -----------------------------------------------------------------------------


def test_wrong_pin_is_refused(hsm: SoftHsm) -> None:
    generate_key(hsm.uri("signing"), hsm.pin_source)
    with pytest.raises(KeyAccessError, match=f"^wrong PIN for token '{TOKEN}'$"):
        load_signer(hsm.uri("signing"), lambda: b"not-the-pin")
    with pytest.raises(KeyAccessError, match="wrong PIN"):
        generate_key(hsm.uri("another"), lambda: b"not-the-pin")


def test_unknown_token_is_refused_listing_the_tokens(hsm: SoftHsm) -> None:
    hsm.init_token("spare")
    with pytest.raises(KeyAccessError) as refused:
        load_signer(hsm.uri("signing", token="absent"), never_asked)
    assert str(refused.value) == (
        f"no PKCS#11 token labelled 'absent' in {MODULE} (tokens present: '{TOKEN}', 'spare')"
    )


def test_unknown_key_is_refused(hsm: SoftHsm) -> None:
    generate_key(hsm.uri("root-ca"), hsm.pin_source)
    with pytest.raises(KeyAccessError) as refused:
        load_signer(hsm.uri("signing"), hsm.pin_source)
    assert str(refused.value) == (
        f"no private key labelled 'signing' in token '{TOKEN}' (private keys present: 'root-ca')"
    )


def test_generating_over_an_existing_label_is_refused(hsm: SoftHsm) -> None:
    first = generate_key(hsm.uri("signing"), hsm.pin_source)
    with pytest.raises(KeyAccessError, match="refusing to overwrite"):
        generate_key(hsm.uri("signing"), hsm.pin_source)
    assert load_signer(hsm.uri("signing"), hsm.pin_source).public_key() == first.public_key()
    with hsm.session() as session:
        assert len(list(session.get_objects({Attribute.LABEL: "signing"}))) == 2  # pub + priv


def test_missing_module_is_refused_naming_the_path(
    hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(KeyAccessError, match=r"^PKCS#11 module /nowhere/p11\.so not found"):
        load_signer(hsm.uri("k") + "?module-path=/nowhere/p11.so", never_asked)
    monkeypatch.setenv("CHARGEWARD_PKCS11_MODULE", "/nowhere/env.so")
    with pytest.raises(
        KeyAccessError, match=r"/nowhere/env\.so not found .*CHARGEWARD_PKCS11_MODULE"
    ):
        generate_key(hsm.uri("k"), never_asked)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("pkcs11:token=t", "lacks object"),
        ("pkcs11:object=k", "lacks token"),
        ("pkcs11:", "lacks token and object"),
        ("pkcs11:token=t;object=k;id=%01", "unsupported attribute 'id'"),
        ("pkcs11:token=t;object=k;token=u", "appears twice"),
        ("pkcs11:token=t;object=k?pin-value=1234", "carrying a PIN"),
        ("pkcs11:token=t;object=k?pin-source=file:/pin", "carrying a PIN"),
        ("pkcs11:token=t;object=k?module-name=softhsm2", "unsupported attribute 'module-name'"),
        ("pkcs11:token=t;object=k?module-path=lib.so", "absolute path"),
        ("pkcs11:token=my token;object=k", "must be percent-encoded"),
        ("pkcs11:token=t;object=k/1", "must be percent-encoded"),
        ("pkcs11:token=t;object=k%zz", "must be percent-encoded"),
        ("pkcs11:token=t;object=%ff", "not UTF-8"),
        ("pkcs11:token=t;object=", "is empty"),
        ("pkcs11:token=t;object=%00", "control characters"),
        ("pkcs11:token=t;object=k#frag", "no fragment"),
        ("pkcs11:token=t;;object=k", "not name=value"),
        (f"pkcs11:token={'x' * 33};object=k", "at most 32 bytes"),
    ],
)
def test_malformed_uri_is_refused_before_touching_the_token(uri: str, reason: str) -> None:
    with pytest.raises(KeyAccessError, match=reason):
        load_signer(uri, never_asked)
    with pytest.raises(KeyAccessError, match=reason):
        normalise_uri(uri)


def test_refusals_never_echo_a_pin_from_the_uri() -> None:
    with pytest.raises(KeyAccessError) as refused:
        load_signer("pkcs11:token=t;object=k?pin-value=s3cret-pin", never_asked)
    assert "s3cret-pin" not in str(refused.value)


def test_uri_parsing_and_canonical_form() -> None:
    parsed = parse_pkcs11_uri("PKCS11:object=a%3db&c;token=%41CME?module-path=/opt/p11/lib.so")
    assert (parsed.token, parsed.object, parsed.module_path) == ("ACME", "a=b&c", "/opt/p11/lib.so")
    assert str(parsed) == "pkcs11:token=ACME;object=a=b&c?module-path=/opt/p11/lib.so"
    assert normalise_uri("pkcs11:object=k;token=t") == "pkcs11:token=t;object=k"


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def runner(hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("CHARGEWARD_PKCS11_PIN", hsm.pin)
    monkeypatch.delenv("CHARGEWARD_KEY_PASSPHRASE", raising=False)  # no file keys involved
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_cli_keys_pki_and_release_with_token_keys(
    runner: CliRunner, hsm: SoftHsm, tmp_path: Path
) -> None:
    root_uri, signing_uri = hsm.uri("root-ca"), hsm.uri("firmware-signing")
    created = ok(runner, "keys", "generate", root_uri)
    assert f"Created key {root_uri}" in created
    assert "Private key: non-extractable" in created
    ok(
        runner,
        *("pki", "init-root", "--key", root_uri, "--out", "root.pem"),
        *("--cn", "ACME Manufacturer Root CA", "--org", "ACME"),
    )
    ok(
        runner,
        *("pki", "issue-signing", "--ca-key", root_uri, "--ca-cert", "root.pem"),
        *("--key", signing_uri, "--generate-key", "--out", "signing.pem"),
        *("--cn", "ACME Firmware Signing", "--org", "ACME"),
    )
    root = load_certificate_file(tmp_path / "root.pem")
    signing = load_certificate_file(tmp_path / "signing.pem")
    assert verify_firmware_signing_certificate(signing, [root]) == root

    shown = ok(runner, "keys", "show", signing_uri)
    fingerprint = describe_certificate(signing).public_key_fingerprint
    assert f"Public key SHA-256: {fingerprint}" in shown
    assert "Private key: non-extractable, generated in the token" in shown
    assert "EXTRACTABLE=False" in shown
    assert "-----BEGIN PUBLIC KEY-----" in shown

    (tmp_path / "firmware.bin").write_bytes(os.urandom(50_000))
    ok(
        runner,
        *("release", "build", "--image", "firmware.bin", "--version", "1.2.0"),
        *("--security-version", "3", "--model", "AC22"),
        *("--signing-key", signing_uri, "--signing-cert", "signing.pem", "--out", "release.cwb"),
    )
    assert read_manifest(tmp_path / "release.cwb").version == "1.2.0"
    assert "verified" in ok(runner, "release", "verify", "release.cwb", "--root", "root.pem")
    assert key_attributes(signing_uri, never_asked).non_extractable


def test_cli_keys_generate_refuses_an_existing_label(runner: CliRunner, hsm: SoftHsm) -> None:
    ok(runner, "keys", "generate", hsm.uri("signing"))
    result = runner.invoke(app, ["keys", "generate", hsm.uri("signing")])
    assert isinstance(result.exception, KeyAccessError)
    assert "refusing to overwrite" in str(result.exception)


def _chargeward(
    hsm: SoftHsm, cwd: Path, *args: str, pin: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEWARD_")}
    env.update(hsm.env(), COLUMNS="200")
    if pin is None:
        del env["CHARGEWARD_PKCS11_PIN"]
    else:
        env["CHARGEWARD_PKCS11_PIN"] = pin
    return subprocess.run(
        [sys.executable, "-m", "chargeward", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_refusals_are_one_line_with_exit_code_6(hsm: SoftHsm, tmp_path: Path) -> None:
    uri = hsm.uri("signing")
    wrong = _chargeward(hsm, tmp_path, "keys", "generate", uri, pin="not-the-pin")
    assert wrong.returncode == 6
    assert wrong.stderr.splitlines() == [f"error: wrong PIN for token '{TOKEN}'"]
    no_pin = _chargeward(hsm, tmp_path, "keys", "show", uri, pin=None)
    assert no_pin.returncode == 6
    assert no_pin.stderr.splitlines() == [
        "error: no PIN for the PKCS#11 token: set CHARGEWARD_PKCS11_PIN"
    ]
    assert "Traceback" not in wrong.stderr + no_pin.stderr
    with hsm.session() as session:
        assert not list(session.get_objects())  # nothing was generated
