"""Signed build provenance: SLSA v1 statements in DSSE envelopes, made and checked.

Proves that provenance signed with a file key or a SoftHSM2 token key verifies with the public
key alone; that a changed subject, payload, payload type, statement type or key is refused with
a reason naming what is wrong; that the payload is a deterministic function of its inputs; and
that the DSSE encoding agrees with the spec's example and with securesystemslib both ways.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from chargeward.crypto import Signer, generate_key, public_key_fingerprint, public_key_pem
from chargeward.crypto.dsse import (
    Envelope,
    EnvelopeSignature,
    pae,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from chargeward.errors import AttestationRefused, ConfigError
from chargeward.supply.provenance import (
    BUILD_TYPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    ProvenanceInputs,
    ProvenanceLimits,
    Subject,
    build_statement,
    canonical_json,
    create_provenance,
    subject_from_bytes,
    verify_provenance,
)
from chargeward.supply.rebuild import OutputDigests, RebuildResult, RebuildStatus
from chargeward.trust.tuf_keys import TufSigner
from tests.support.softhsm import SoftHsm, use_softhsm

STARTED = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
FINISHED = dt.datetime(2026, 3, 1, 12, 4, 30, tzinfo=dt.UTC)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE = subject_from_bytes("images/main.cwfw", b"firmware image")
BUNDLE = subject_from_bytes("acme-1.2.0.cwb", b"release bundle")
SUBJECTS = [IMAGE, BUNDLE]


def clock() -> dt.datetime:
    return FINISHED


@pytest.fixture
def signer(tmp_path: Path, secret: Callable[[], bytes]) -> Signer:
    return generate_key(f"file:{tmp_path / 'release.key'}", secret)


@pytest.fixture
def other_signer(tmp_path: Path, secret: Callable[[], bytes]) -> Signer:
    return generate_key(f"file:{tmp_path / 'mallory.key'}", secret)


def inputs(**changes: Any) -> ProvenanceInputs:
    rebuild = RebuildResult(
        RebuildStatus.REPRODUCIBLE,
        "make firmware",
        1700000000,
        (OutputDigests("build/main.bin", "ab" * 32, "ab" * 32),),
    )
    fields: dict[str, Any] = {
        "subjects": (IMAGE, BUNDLE),
        "source_repo": "https://git.example/acme/charger-fw",
        "source_commit": COMMIT,
        "started_on": STARTED,
        "source_ref": "refs/tags/v1.2.0",
        "build_command": "make firmware",
        "source_date_epoch": 1700000000,
        "release_version": "1.2.0",
        "toolchain_digest": "cd" * 32,
        "sbom": subject_from_bytes("sbom.cdx.json", b"{}"),
        "scan_report": subject_from_bytes("scan.json", b"[]"),
        "rebuild": rebuild,
    }
    fields.update(changes)
    return ProvenanceInputs(**fields)


def envelope_dict(signer: Signer, **changes: Any) -> dict[str, Any]:
    return json.loads(create_provenance(inputs(**changes), signer, clock=clock).to_json())


def signed(signer: Signer, statement: dict[str, Any], payload_type: str = PAYLOAD_TYPE) -> bytes:
    return sign_envelope(payload_type, canonical_json(statement), signer).to_json()


def refused(reason: str, envelope: bytes, signer: Signer, expected: list[Subject]) -> str:
    with pytest.raises(AttestationRefused) as caught:
        verify_provenance(envelope, [signer.public_key()], expected)
    assert caught.value.reason == reason, str(caught.value)
    return str(caught.value)


# --- DSSE encoding ----------------------------------------------------------------------------


def test_pae_is_the_dsse_spec_example() -> None:
    # DSSE protocol.md, "Test vectors"
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "


@pytest.mark.parametrize(
    ("payload_type", "payload"),
    [(PAYLOAD_TYPE, b'{"a":1}'), ("t\u00ffpe/\u00e9", "gr\u00fc\u00df \U0001f50b".encode())],
)
def test_pae_agrees_with_securesystemslib(payload_type: str, payload: bytes) -> None:
    assert pae(payload_type, payload) == SslibEnvelope(payload, payload_type, {}).pae()


def test_securesystemslib_verifies_our_envelope(signer: Signer) -> None:
    data = create_provenance(inputs(), signer, clock=clock).to_json()
    theirs = SslibEnvelope.from_dict(json.loads(data))
    assert theirs.payload_type == PAYLOAD_TYPE
    keyid = public_key_fingerprint(signer.public_key())
    key = SSlibKey(
        keyid, "ecdsa", "ecdsa-sha2-nistp256", {"public": public_key_pem(signer.public_key())}
    )
    assert theirs.verify([key], 1) == {keyid: key}


def test_we_verify_an_envelope_signed_by_securesystemslib(signer: Signer) -> None:
    statement = build_statement(inputs(), clock=clock)
    theirs = SslibEnvelope(canonical_json(statement), PAYLOAD_TYPE, {})
    theirs.sign(TufSigner(signer))  # keyid is TUF's, not our fingerprint: keyids are hints
    data = json.dumps(theirs.to_dict()).encode()
    verified = verify_provenance(data, [signer.public_key()], SUBJECTS)
    assert verified.keyid == public_key_fingerprint(signer.public_key())


def test_url_safe_unpadded_base64_is_accepted(signer: Signer) -> None:
    envelope = sign_envelope(PAYLOAD_TYPE, b"\xfb\xff payload?", signer)
    doc = envelope.to_dict()
    doc["payload"] = base64.urlsafe_b64encode(envelope.payload).decode().rstrip("=")
    parsed = parse_envelope(json.dumps(doc).encode())
    assert parsed == envelope
    assert verify_envelope(parsed, [signer.public_key()]).payload == envelope.payload


# --- provenance that verifies ---------------------------------------------------------------


def test_statement_is_slsa_v1_provenance(signer: Signer) -> None:
    data = create_provenance(inputs(), signer, clock=clock).to_json()
    doc = json.loads(data)
    assert doc["payloadType"] == PAYLOAD_TYPE
    assert doc["signatures"][0]["keyid"] == public_key_fingerprint(signer.public_key())

    statement = verify_provenance(data, [signer.public_key()], SUBJECTS)
    assert set(statement.subjects) == {IMAGE, BUNDLE}
    payload = json.loads(statement.payload)
    assert payload["_type"] == STATEMENT_TYPE
    assert payload["predicateType"] == PREDICATE_TYPE
    assert payload["subject"] == [  # sorted by name
        {"name": "acme-1.2.0.cwb", "digest": {"sha256": BUNDLE.sha256}},
        {"name": "images/main.cwfw", "digest": {"sha256": IMAGE.sha256}},
    ]
    definition = statement.build_definition
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"] == {
        "source": {
            "repository": "https://git.example/acme/charger-fw",
            "ref": "refs/tags/v1.2.0",
            "commit": COMMIT,
        },
        "buildCommand": "make firmware",
        "sourceDateEpoch": 1700000000,
        "releaseVersion": "1.2.0",
    }
    assert definition["resolvedDependencies"] == [
        {
            "name": "source",
            "uri": "git+https://git.example/acme/charger-fw@refs/tags/v1.2.0",
            "digest": {"gitCommit": COMMIT},
        },
        {"name": "toolchain", "digest": {"sha256": "cd" * 32}},
    ]
    run = statement.run_details
    assert run["builder"]["version"] == {"chargeward": "0.1.0"}
    assert run["metadata"]["startedOn"] == "2026-03-01T12:00:00Z"
    assert run["metadata"]["finishedOn"] == "2026-03-01T12:04:30Z"
    byproducts = {b["name"]: b for b in run["byproducts"]}
    assert byproducts["sbom"]["digest"] == {"sha256": hashlib.sha256(b"{}").hexdigest()}
    assert byproducts["vulnerability-scan"]["digest"] == {
        "sha256": hashlib.sha256(b"[]").hexdigest()
    }
    rebuild = byproducts["rebuild-check"]
    assert rebuild["annotations"]["result"] == "reproducible"
    assert rebuild["annotations"]["outputs"] == {
        "build/main.bin": {"first": "ab" * 32, "second": "ab" * 32}
    }
    record = canonical_json(inputs().rebuild.to_dict())  # type: ignore[union-attr]
    assert rebuild["digest"] == {"sha256": hashlib.sha256(record).hexdigest()}


def test_provenance_signed_in_a_softhsm_token_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm: SoftHsm = use_softhsm(tmp_path / "softhsm", monkeypatch)
    token_signer = generate_key(hsm.uri("release"), hsm.pin_source)
    data = create_provenance(inputs(), token_signer, clock=clock).to_json()
    statement = verify_provenance(data, [token_signer.public_key()], SUBJECTS)
    assert statement.keyid == public_key_fingerprint(token_signer.public_key())
    assert json.loads(data)["signatures"][0]["keyid"] == statement.keyid


def test_same_inputs_give_the_same_payload(signer: Signer) -> None:
    first = envelope_dict(signer)
    second = envelope_dict(signer)
    assert first["payload"] == second["payload"]
    assert first["signatures"][0]["sig"] != second["signatures"][0]["sig"]  # ECDSA is randomised
    later = json.loads(
        create_provenance(
            inputs(), signer, clock=lambda: FINISHED + dt.timedelta(seconds=1)
        ).to_json()
    )
    assert later["payload"] != first["payload"]
    assert envelope_dict(signer, subjects=(BUNDLE, IMAGE))["payload"] == first["payload"]


def test_invocation_id_is_derived_unless_given(signer: Signer) -> None:
    derived = build_statement(inputs(), clock=clock)["predicate"]["runDetails"]["metadata"]
    other = build_statement(inputs(source_commit="f" * 40), clock=clock)
    assert derived["invocationId"] != other["predicate"]["runDetails"]["metadata"]["invocationId"]
    given = build_statement(inputs(invocation_id="ci-run-4711"), clock=clock)
    assert given["predicate"]["runDetails"]["metadata"]["invocationId"] == "ci-run-4711"


def test_any_trusted_key_will_do(signer: Signer, other_signer: Signer) -> None:
    data = create_provenance(inputs(), signer, clock=clock).to_json()
    keys = [other_signer.public_key(), signer.public_key()]
    assert verify_provenance(data, keys, SUBJECTS).keyid == public_key_fingerprint(
        signer.public_key()
    )


# --- provenance that is refused ---------------------------------------------------------------


def test_a_tampered_subject_digest_is_refused_naming_the_subject(signer: Signer) -> None:
    data = create_provenance(inputs(), signer, clock=clock).to_json()
    changed = subject_from_bytes("images/main.cwfw", b"firmware image, patched")
    message = refused("subject-digest", data, signer, [changed, BUNDLE])
    assert "'images/main.cwfw'" in message
    assert changed.sha256 in message and IMAGE.sha256 in message


def test_missing_or_extra_subjects_are_refused(signer: Signer) -> None:
    data = create_provenance(inputs(), signer, clock=clock).to_json()
    extra = subject_from_bytes("images/modem.cwfw", b"modem")
    assert "'images/modem.cwfw'" in refused("subject-missing", data, signer, [*SUBJECTS, extra])
    assert "acme-1.2.0.cwb" in refused("subject-extra", data, signer, [IMAGE])


def test_a_tampered_payload_is_refused(signer: Signer) -> None:
    doc = envelope_dict(signer)
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "00" * 32
    doc["payload"] = base64.b64encode(canonical_json(statement)).decode()
    refused("signature", json.dumps(doc).encode(), signer, SUBJECTS)


def test_a_wrong_key_is_refused(signer: Signer, other_signer: Signer) -> None:
    data = create_provenance(inputs(), other_signer, clock=clock).to_json()
    refused("signature", data, signer, SUBJECTS)


def test_a_trusted_keyid_on_a_foreign_signature_is_not_trusted(
    signer: Signer, other_signer: Signer
) -> None:
    doc = envelope_dict(other_signer)
    doc["signatures"][0]["keyid"] = public_key_fingerprint(signer.public_key())
    refused("signature", json.dumps(doc).encode(), signer, SUBJECTS)


def test_a_changed_payload_type_breaks_the_signature(signer: Signer) -> None:
    doc = envelope_dict(signer)
    doc["payloadType"] = "application/json"
    refused("signature", json.dumps(doc).encode(), signer, SUBJECTS)


def test_a_signed_but_wrong_payload_type_is_refused(signer: Signer) -> None:
    statement = build_statement(inputs(), clock=clock)
    message = refused(
        "payload-type", signed(signer, statement, "application/json"), signer, SUBJECTS
    )
    assert "application/vnd.in-toto+json" in message


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("_type", "https://in-toto.io/Statement/v0.1", "statement-type"),
        ("predicateType", "https://slsa.dev/provenance/v0.2", "predicate-type"),
    ],
)
def test_signed_statements_of_other_types_are_refused(
    signer: Signer, field: str, value: str, reason: str
) -> None:
    statement = build_statement(inputs(), clock=clock)
    statement[field] = value
    assert value in refused(reason, signed(signer, statement), signer, SUBJECTS)


def test_expected_subjects_must_be_named(signer: Signer) -> None:
    data = create_provenance(inputs(), signer, clock=clock).to_json()
    with pytest.raises(ConfigError, match="at least one expected subject"):
        verify_provenance(data, [signer.public_key()], [])


def test_size_caps_and_shape_of_untrusted_envelopes(signer: Signer) -> None:
    data = create_provenance(inputs(), signer, clock=clock).to_json()
    small = ProvenanceLimits(max_envelope_bytes=len(data) - 1)
    with pytest.raises(AttestationRefused) as caught:
        verify_provenance(data, [signer.public_key()], SUBJECTS, limits=small)
    assert caught.value.reason == "oversized"

    doc = json.loads(data)
    doc["signatures"] = doc["signatures"] * 3
    with pytest.raises(AttestationRefused) as caught:
        verify_provenance(
            json.dumps(doc).encode(),
            [signer.public_key()],
            SUBJECTS,
            limits=ProvenanceLimits(max_signatures=2),
        )
    assert caught.value.reason == "oversized"

    statement = build_statement(inputs(), clock=clock)
    statement["subject"] = statement["subject"] * 2
    assert "appears twice" in refused("malformed", signed(signer, statement), signer, SUBJECTS)

    repeated = data.replace(b'"payloadType"', b'"payloadType": "x", "payloadType"', 1)
    assert "repeats the key 'payloadType'" in refused("malformed", repeated, signer, SUBJECTS)
    for bad in (b"[]", b"{", b'{"payload": "", "payloadType": "t", "signatures": []}'):
        refused("malformed", bad, signer, SUBJECTS)


def test_empty_keyid_is_only_a_missing_hint(signer: Signer) -> None:
    envelope = create_provenance(inputs(), signer, clock=clock)
    anonymous = Envelope(
        envelope.payload_type,
        envelope.payload,
        (EnvelopeSignature("", envelope.signatures[0].sig),),
    )
    assert verify_provenance(anonymous.to_json(), [signer.public_key()], SUBJECTS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source_commit": "abc123"}, "full git object name"),
        ({"subjects": ()}, "at least one subject"),
        ({"subjects": (IMAGE, Subject("images/main.cwfw", BUNDLE.sha256))}, "given twice"),
        ({"subjects": (Subject("x", "ABC"),)}, "digest of subject 'x'"),
        ({"toolchain_digest": "sha256:00"}, "toolchain digest"),
        ({"started_on": dt.datetime(2026, 3, 1, 12)}, "timezone-aware"),
        ({"started_on": FINISHED + dt.timedelta(hours=1)}, "before it started"),
    ],
)
def test_bad_inputs_are_named(signer: Signer, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_provenance(inputs(**change), signer, clock=clock)
