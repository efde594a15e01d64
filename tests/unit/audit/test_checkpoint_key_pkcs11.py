"""The audit log's Ed25519 checkpoint key inside a PKCS#11 token (SoftHSM2, no mocks).

The key is generated in the token and cannot leave it; its signatures are PureEdDSA that
``cryptography`` (and so any RFC 8032 verifier) accepts; checkpoints signed with it open under
its verifier key; a server started with ``--checkpoint-key pkcs11:...`` signs its checkpoints
in the token; and the wrong kind of key is refused with a clear reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from typer.testing import CliRunner

from chargeward.audit import merkle
from chargeward.audit.checkpoint import (
    Checkpoint,
    open_checkpoint,
    parse_vkey,
    sign_checkpoint,
    verifier_key,
)
from chargeward.cli.main import app
from chargeward.crypto import generate_key
from chargeward.crypto.ed25519 import (
    generate_ed25519_key,
    load_ed25519_signer,
    verify_ed25519,
)
from chargeward.crypto.pkcs11 import Pkcs11Ed25519Signer
from chargeward.errors import BadSignature, ChargewardError, KeyAccessError
from tests.support.fleet import Pki, running_server
from tests.support.softhsm import MODULE, TOKEN, USER_PIN, SoftHsm, use_softhsm

ORIGIN = "chargeward.test/audit"


@pytest.fixture
def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    return use_softhsm(tmp_path / "softhsm", monkeypatch)


def test_ed25519_key_is_generated_in_the_token_and_cannot_be_read(hsm: SoftHsm) -> None:
    signer = generate_ed25519_key(hsm.uri("checkpoints"), hsm.pin_source)
    assert isinstance(signer, Pkcs11Ed25519Signer)
    assert signer.protection().non_extractable
    import pkcs11

    lib = pkcs11.lib(MODULE)
    try:
        token = lib.get_token(token_label=TOKEN)
        with token.open(user_pin=USER_PIN) as session:
            [private] = session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: "checkpoints"}
            )
            with pytest.raises(AttributeSensitive):
                private[Attribute.VALUE]
    finally:
        lib.finalize()


def test_token_signatures_are_rfc8032_ed25519(hsm: SoftHsm) -> None:
    made = generate_ed25519_key(hsm.uri("checkpoints"), hsm.pin_source)
    signer = load_ed25519_signer(hsm.uri("checkpoints"), hsm.pin_source)
    assert signer.public_key_raw() == made.public_key_raw()
    message = b"chargeward.test/audit\n14\nroot\n"
    signature = signer.sign(message)
    assert len(signature) == 64
    Ed25519PublicKey.from_public_bytes(signer.public_key_raw()).verify(signature, message)
    assert verify_ed25519(signer.public_key_raw(), message, signature)
    assert not verify_ed25519(signer.public_key_raw(), message + b"x", signature)


def test_a_checkpoint_signed_in_the_token_opens_under_its_verifier_key(hsm: SoftHsm) -> None:
    signer = generate_ed25519_key(hsm.uri("checkpoints"), hsm.pin_source)
    head = Checkpoint(ORIGIN, 5, merkle.leaf_hash(b"a root hash, 32 bytes"))
    note = sign_checkpoint(head, signer)
    key = verifier_key(ORIGIN, signer.public_key_raw())
    assert open_checkpoint(note, key) == head
    other = generate_ed25519_key(hsm.uri("other"), hsm.pin_source)
    with pytest.raises(BadSignature, match="no signature from a trusted key"):
        open_checkpoint(note, verifier_key(ORIGIN, other.public_key_raw()))


def test_a_p256_key_is_not_taken_for_an_ed25519_one_nor_the_reverse(hsm: SoftHsm) -> None:
    generate_key(hsm.uri("signing"), hsm.pin_source)
    generate_ed25519_key(hsm.uri("checkpoints"), hsm.pin_source)
    with pytest.raises(KeyAccessError, match=r"'signing' .* is not Ed25519"):
        load_ed25519_signer(hsm.uri("signing"), hsm.pin_source)
    from chargeward.crypto import load_signer

    with pytest.raises(KeyAccessError, match=r"'checkpoints' .* is not ECDSA P-256"):
        load_signer(hsm.uri("checkpoints"), hsm.pin_source)


def test_generating_over_an_existing_label_is_refused(hsm: SoftHsm) -> None:
    first = generate_ed25519_key(hsm.uri("checkpoints"), hsm.pin_source)
    with pytest.raises(KeyAccessError, match="refusing to overwrite"):
        generate_ed25519_key(hsm.uri("checkpoints"), hsm.pin_source)
    again = load_ed25519_signer(hsm.uri("checkpoints"), hsm.pin_source)
    assert again.public_key_raw() == first.public_key_raw()


def test_cli_generates_and_shows_an_ed25519_token_key(
    hsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEWARD_PKCS11_PIN", USER_PIN)
    runner = CliRunner()
    uri = hsm.uri("checkpoints")
    made = runner.invoke(
        app,
        ["keys", "generate", "--algorithm", "ed25519", uri, "--data-dir", str(tmp_path / "d")],
    )
    assert made.exit_code == 0, made.output
    assert "non-extractable" in made.output
    shown = runner.invoke(app, ["keys", "show", "--algorithm", "ed25519", uri])
    assert shown.exit_code == 0, shown.output
    key = load_ed25519_signer(uri, hsm.pin_source).public_key_raw()
    import base64

    assert base64.b64encode(key).decode() in shown.output
    wrong = runner.invoke(app, ["keys", "show", uri])  # P-256 expected by default
    assert isinstance(wrong.exception, KeyAccessError)
    assert "is not ECDSA P-256" in str(wrong.exception)


@pytest.mark.timeout(90)
def test_server_signs_checkpoints_with_the_token_key(hsm: SoftHsm, tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    signer = generate_ed25519_key(hsm.uri("checkpoints"), hsm.pin_source)
    env = {"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"], "CHARGEWARD_PKCS11_PIN": USER_PIN}
    args = ("--checkpoint-key", hsm.uri("checkpoints"), "--audit-origin", ORIGIN)
    with running_server(tmp_path, pki, extra_env=env, extra_args=args) as srv:
        with srv.http as c:
            vkey = c.get("/api/v1/audit/vkey")
            made = c.post("/api/v1/audit/checkpoints")
            latest = c.get("/api/v1/audit/checkpoints/latest")
        assert vkey.status_code == 200 and made.status_code < 300, made.text
        key = parse_vkey(vkey.text.strip())
        assert key.public_key == signer.public_key_raw()
        head = open_checkpoint(latest.text, key)
        assert head.size == made.json()["size"] and head.origin == ORIGIN


def test_server_refuses_to_start_with_a_checkpoint_key_it_cannot_open(
    hsm: SoftHsm, tmp_path: Path
) -> None:
    pki = Pki.create(tmp_path / "pki")
    generate_key(hsm.uri("signing"), hsm.pin_source)  # a P-256 key: not a checkpoint key
    env = {"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"], "CHARGEWARD_PKCS11_PIN": USER_PIN}
    args = ("--checkpoint-key", hsm.uri("signing"))
    with (
        pytest.raises(ChargewardError) as refused,
        running_server(tmp_path, pki, extra_env=env, extra_args=args),
    ):
        pass
    log = (tmp_path / "server.log").read_text()
    assert "audit checkpoint key" in log and "is not Ed25519" in log, (refused.value, log[-2000:])
    assert "Traceback" not in log
