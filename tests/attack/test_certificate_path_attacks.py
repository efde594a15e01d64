"""Certificate path attacks: signing certificates that RFC 5280 or OCPP forbid.

Each crafted path (tests/support/crafted_certs.py) is judged three ways: by the openssl CLI,
an independent RFC 5280 implementation (``openssl verify -x509_strict``), by the validation
function every Chargeward caller uses, and, for every refused case, by the real agent
answering a real UpdateFirmware: InvalidCertificate, security event
InvalidFirmwareSigningCertificate, no download, the active slot untouched.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.v201 import call

from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.agent.tls import new_csr
from chargeward.crypto.path import verify_signing_path
from chargeward.crypto.pki import certificate_pem, verify_firmware_signing_certificate
from chargeward.errors import CertificatePathRefused, UntrustedCertificate
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import PASSWORD, running_agent, running_csms, statuses
from tests.support.crafted_certs import (
    AT,
    Crafted,
    ca_certificate,
    crafted_cases,
    dn,
    key_usage,
    new_key,
    openssl_verify,
    pem,
    station_certificate,
)
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo

CASES = [
    "good",
    "inside-permitted-subtree",
    "anchor-without-keycertsign",
    "anchor-not-a-ca",
    "leaf-unknown-critical-extension",
    "leaf-outside-permitted-subtree",
    "leaf-in-excluded-subtree",
    "leaf-san-outside-permitted-dns",
    "leaf-expired",
    "leaf-not-yet-valid",
    "leaf-is-a-ca",
    "leaf-without-digital-signature",
    "intermediate-present",
    "wrong-issuer-signature",
]
# What the charger's security event says for each refused case (its tech_info).
REFUSED = {
    "anchor-without-keycertsign": "the issuing root may not sign certificates",
    "anchor-not-a-ca": "the issuing root is not a CA certificate",
    "leaf-unknown-critical-extension": "critical extension this charger does not process",
    "leaf-outside-permitted-subtree": "outside the permitted subtrees of the issuing root",
    "leaf-in-excluded-subtree": "in a subtree excluded by the issuing root",
    "leaf-san-outside-permitted-dns": "outside the permitted subtrees of the issuing root",
    "leaf-expired": "not valid at this time",
    "leaf-not-yet-valid": "not valid at this time",
    "leaf-is-a-ca": "signing certificate is a CA certificate",
    "leaf-without-digital-signature": "lacks digitalSignature",
    "intermediate-present": "not issued by an installed root",
    "wrong-issuer-signature": "not issued by an installed root",
}
DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def table() -> dict[str, Crafted]:
    cases = {case.name: case for case in crafted_cases(AT)}
    assert sorted(cases) == sorted(CASES)
    return cases


def test_the_table_is_every_case() -> None:
    assert [case.name for case in crafted_cases(AT)] == CASES
    assert sorted(REFUSED) == sorted(c.name for c in crafted_cases(AT) if not c.ocpp_valid)


def _refusal(decide: Callable[[], object]) -> UntrustedCertificate | None:
    try:
        decide()
    except UntrustedCertificate as e:
        return e
    return None


def _assert_verdict(case: Crafted, refusal: UntrustedCertificate | None, openssl: str) -> None:
    if case.ocpp_valid:
        assert refusal is None, f"{case.name} refused: {refusal}"
    else:
        assert refusal is not None, f"{case.name} accepted; openssl: {openssl!r}"
        assert isinstance(refusal, CertificatePathRefused), repr(refusal)
        assert refusal.reason == case.reason, f"{case.name}: {refusal.reason}: {refusal}"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
@pytest.mark.parametrize("name", CASES)
def test_crafted_path_is_judged_as_openssl_judges_it(
    name: str, table: dict[str, Crafted], tmp_path: Path
) -> None:
    """openssl (RFC 5280, strict) and the table agree; Chargeward's decision follows the
    table: the same verdict on the path, and the OCPP firmware-signing profile refuses more
    (a CA or a non-signing key as leaf), which openssl's purpose "any" does not know."""
    case = table[name]
    openssl_ok, output = openssl_verify(case, tmp_path)
    assert openssl_ok == case.path_valid, output
    refusal = _refusal(
        lambda: verify_firmware_signing_certificate(case.leaf, [case.anchor], now=AT)
    )
    _assert_verdict(case, refusal, output)
    if openssl_ok and refusal is not None:  # only the OCPP profile may refuse beyond RFC 5280
        assert isinstance(refusal, CertificatePathRefused) and refusal.reason == "leaf-profile"


@pytest.mark.parametrize("name", CASES)
def test_the_pure_function_decides_from_bytes_and_time(
    name: str, table: dict[str, Crafted]
) -> None:
    case = table[name]
    leaf, anchor = case.leaf.public_bytes(DER), case.anchor.public_bytes(DER)
    refusal = _refusal(lambda: verify_signing_path(leaf, [anchor], at=AT))
    _assert_verdict(case, refusal, "-")
    if refusal is None:
        path = verify_signing_path(pem(case.leaf), [pem(case.anchor)], at=AT)
        assert (path.leaf, path.anchor, path.anchor_index) == (case.leaf, case.anchor, 0)


def test_leaf_sent_with_its_intermediate_is_refused(table: dict[str, Crafted]) -> None:
    """OCPP: no intermediates, even when the chain is handed over complete."""
    case = table["intermediate-present"]
    with pytest.raises(CertificatePathRefused, match="intermediates are not allowed") as e:
        verify_signing_path(pem(case.leaf, *case.intermediates), [pem(case.anchor)], at=AT)
    assert e.value.reason == "issuer"


# -- the same attacks through the real agent -------------------------------------------------


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path, VerifiedBundle]:
    d = tmp_path_factory.mktemp("pathval")
    pki = Pki.create(d / "pki")
    update = verify_bundle(pki.bundle(d / "u.cwb", "1.1.0", 2), [pki.root_cert], workdir=d / "u")
    return pki, pki.bundle(d / "factory.cwb", "1.0.0", 1), update


def _signature(key: ec.EllipticCurvePrivateKey, image: Path) -> str:
    """The OCPP signature of ``image`` by ``key``: only the certificate is wrong."""
    return base64.b64encode(key.sign(image.read_bytes(), ec.ECDSA(hashes.SHA256()))).decode()


@pytest.mark.parametrize("name", REFUSED)
async def test_update_firmware_with_crafted_signing_certificate_is_refused(
    name: str, genuine: tuple[Pki, Path, VerifiedBundle], tmp_path: Path
) -> None:
    pki, factory, update = genuine
    clock = Clock()
    case = next(c for c in crafted_cases(clock()) if c.name == name)
    provision(
        tmp_path / "charger",
        identity=Identity("CP-PATH", MODEL, "T", "CP-PATH"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory,
    )
    charger = StateDir(tmp_path / "charger")
    # The charger holds the case's anchor beside the genuine root (as a provisioned store).
    charger.set_trust_anchors(pki.root_pem.read_bytes() + pem(case.anchor))
    before = (charger.boot_control(), charger.slot_info("b"), charger.rollback_floor())
    certificate = "".join(certificate_pem(c) for c in (case.leaf, *case.intermediates))
    with TufRepo(clock) as files:
        files.serve("fw/u.cwfw", update.images[0].file.read_bytes())
        async with running_csms() as csms, running_agent(charger, csms, clock, None):
            answer = await csms.update_firmware(
                files.url + "fw/u.cwfw",
                update,
                clock(),
                certificate=certificate,
                signature=_signature(case.leaf_key, update.images[0].file),
            )
            assert answer == "InvalidCertificate", name
            event = await csms.wait(
                lambda: [
                    e
                    for e in csms.of("SecurityEventNotification")
                    if e["type"] == "InvalidFirmwareSigningCertificate"
                ],
                "security event",
            )
            assert REFUSED[name] in event[0]["tech_info"]
            assert statuses(csms) == []  # OCPP L01.FR.02: no download, no status
    assert (charger.boot_control(), charger.slot_info("b"), charger.rollback_floor()) == before


async def test_update_firmware_with_a_good_crafted_path_is_accepted(
    genuine: tuple[Pki, Path, VerifiedBundle], tmp_path: Path
) -> None:
    """The control: the same set-up with a well-formed path is accepted, so the refusals
    above are about the defect, not the crafting."""
    pki, factory, update = genuine
    clock = Clock()
    case = next(c for c in crafted_cases(clock()) if c.name == "inside-permitted-subtree")
    provision(
        tmp_path / "charger",
        identity=Identity("CP-PATH", MODEL, "T", "CP-PATH"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory,
    )
    charger = StateDir(tmp_path / "charger")
    charger.set_trust_anchors(pki.root_pem.read_bytes() + pem(case.anchor))
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        answer = await csms.update_firmware(
            "http://127.0.0.1:9/never.cwfw",
            update,
            clock() + dt.timedelta(days=1),  # scheduled: nothing is fetched in this test
            certificate=certificate_pem(case.leaf),
            signature=_signature(case.leaf_key, update.images[0].file),
        )
        assert answer == "Accepted"


# -- a station certificate chain sent with CertificateSigned (OCPP A02) ----------------------

SERIAL = "CP-PATH"
# Each case: the CSMS root the charger trusts, and the chain (leaf first) the CSMS sends for
# the key of the charger's outstanding request.
CHAINS = {
    "intermediate-without-keycertsign": "an intermediate CA certificate may not sign",
    "intermediate-beyond-path-length": "allows 0 intermediate CAs below it",
    "anchor-without-keycertsign": "the issuing CA may not sign certificates",
    "leaf-unknown-critical-extension": "critical extension",
    "leaf-outside-name-constraints": "outside the permitted subtrees of the issuing CA",
}


def _chain(name: str, key: ec.EllipticCurvePublicKey, at: dt.datetime) -> tuple[bytes, str]:
    """(the CSMS root PEM the charger holds, the chain PEM the CSMS sends) for case ``name``."""
    root_key, inter_key = new_key(), new_key()
    acme = x509.DirectoryName(dn((NameOID.ORGANIZATION_NAME, "ACME")))
    root = ca_certificate(
        root_key,
        at=at,
        path_length=0 if name == "intermediate-beyond-path-length" else None,
        usage=key_usage(digital_signature=True, crl_sign=True)
        if name == "anchor-without-keycertsign"
        else None,
        extra=[(x509.NameConstraints([acme], None), True)]
        if name == "leaf-outside-name-constraints"
        else (),
    )
    via_intermediate = name.startswith("intermediate") or name == "good-with-intermediate"
    inter = ca_certificate(
        inter_key,
        at=at,
        name=dn((NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.COMMON_NAME, "ACME Sub CA")),
        issuer=(root.subject, root_key),
        usage=key_usage(digital_signature=True) if name.endswith("keycertsign") else None,
    )
    issuer, issuer_key = (inter, inter_key) if via_intermediate else (root, root_key)
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.2"), b"")
    leaf = station_certificate(
        key,
        issuer,
        issuer_key,
        SERIAL,
        at=at,
        organization="MALLORY" if name == "leaf-outside-name-constraints" else "ACME",
        extra=[(unknown, True)] if name == "leaf-unknown-critical-extension" else (),
    )
    chain = (leaf, inter) if via_intermediate else (leaf,)
    return pem(root), pem(*chain).decode()


async def _send_chain(
    name: str, genuine: tuple[Pki, Path, VerifiedBundle], tmp_path: Path
) -> tuple[Any, list[dict[str, str]], StateDir, Any]:
    """Send case ``name``'s chain to a charger with an outstanding key request: (the
    CertificateSigned result, its security events, the charger, its credentials before)."""
    pki, factory, _ = genuine
    clock = Clock()
    charger = StateDir(tmp_path / "charger")
    provision(
        charger.root,
        identity=Identity(SERIAL, MODEL, "T", SERIAL),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory,
    )
    key = x509.load_pem_x509_csr(new_csr(charger).encode()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    csms_root, chain = _chain(name, key, clock())
    charger.set_csms_roots(csms_root)
    pending = charger.credential_store().load()
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        assert csms.station is not None
        result = await csms.station.call(
            call.CertificateSigned(
                certificate_chain=chain, certificate_type="ChargingStationCertificate"
            )
        )
        events: list[dict[str, str]] = []
        if result.status != "Accepted":
            events = await csms.wait(
                lambda: [
                    e
                    for e in csms.of("SecurityEventNotification")
                    if e["type"] == "InvalidChargingStationCertificate"
                ],
                "security event",
            )
    return result, events, charger, pending


@pytest.mark.parametrize("name", list(CHAINS))
async def test_certificate_signed_with_a_forbidden_chain_is_rejected(
    name: str, genuine: tuple[Pki, Path, VerifiedBundle], tmp_path: Path
) -> None:
    """A CSMS sends the charger a station certificate whose chain RFC 5280 forbids: the
    charger answers Rejected, reports InvalidChargingStationCertificate and keeps its key
    request and its (absent) certificate."""
    result, events, charger, pending = await _send_chain(name, genuine, tmp_path)
    assert result.status == "Rejected", name
    assert CHAINS[name] in (result.status_info or {}).get("additional_info", ""), result
    assert CHAINS[name] in events[0]["tech_info"]
    assert not charger.device_certificate_path.exists()
    assert charger.credential_store().load() == pending  # the request is still outstanding


async def test_certificate_signed_with_a_good_chain_is_accepted(
    genuine: tuple[Pki, Path, VerifiedBundle], tmp_path: Path
) -> None:
    """The control: a chain through a proper intermediate CA is installed."""
    result, _, charger, _ = await _send_chain("good-with-intermediate", genuine, tmp_path)
    assert result.status == "Accepted"
    assert charger.device_certificate_path.exists()
