"""Moving a fleet to a new CSMS server certificate (OCPP M03-M05 for CSMSRootCertificate).

The real agent connects over wss:// to the real OCPP listener; the CSMS installs a second
CSMS root, lists both, and the agent then connects to a server whose certificate chains only
to the new root.  The old root may go once the connection no longer depends on it; the
last one never does (the charger would lock itself out).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from chargeward.agent import tls as station_tls
from chargeward.crypto import certificate_pem, create_root_ca, generate_key
from chargeward.crypto.pki import (
    certificate_fingerprint,
    certificate_hash_data,
    load_certificate,
)
from chargeward.crypto.tls import issue_server_certificate
from chargeward.ocpp.csms import CertificateAnswer, CsmsChargePoint, InstalledCertificateId
from chargeward.server.store.tables import SecurityEvent
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.tls import (
    Csms,
    TlsPki,
    provision_charger,
    running_agent,
    running_csms,
    try_connect,
)

STATION = "CP-ROOTS"
PASSWORD = "csms-root-test-password-0123"
CSMS_ROOT = "CSMSRootCertificate"
TRUST_EVENT = "ReconfigurationOfSecurityParameters"
GARBAGE = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def new_csms_root(tls_pki: TlsPki, d: Path) -> tuple[TlsPki, x509.Certificate]:
    """``tls_pki`` with a new CSMS root and a server certificate chaining only to it."""
    d.mkdir(parents=True)
    signer = generate_key(f"file:{d}/csms-root.key", TEST_PASSPHRASE.encode)
    root = create_root_ca(signer, "ACME CSMS Root 2027", "ACME", days=3650)
    (d / "csms-root.pem").write_text(certificate_pem(root))
    server_key = generate_key(f"file:{d}/server.key", TEST_PASSPHRASE.encode)
    server = issue_server_certificate(
        signer, root, server_key.public_key(), "127.0.0.1", "ACME", days=30
    )
    (d / "server.pem").write_text(certificate_pem(server))
    rotated = replace(
        tls_pki,
        csms_ca_pem=d / "csms-root.pem",
        server_cert=d / "server.pem",
        server_key=f"file:{d}/server.key",
    )
    return rotated, root


def weak_rsa_root() -> str:
    """A self-signed CA certificate with a 1024-bit RSA key (OCPP requires 2048)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Weak CSMS Root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return certificate_pem(cert)


def ids(*roots: x509.Certificate) -> tuple[InstalledCertificateId, ...]:
    return tuple(InstalledCertificateId(CSMS_ROOT, certificate_hash_data(r)) for r in roots)


async def connected(csms: Csms) -> CsmsChargePoint:
    cp: CsmsChargePoint = await csms.wait(
        lambda: csms.registry.get(STATION), "the station to connect"
    )
    return cp


async def trust_events(csms: Csms, count: int) -> list[str]:
    """The techInfo of the trust-store security events the station sent, once ``count`` are in."""
    deadline = time.monotonic() + 10
    while True:
        async with csms.db.session() as s:
            rows = await s.execute(
                select(SecurityEvent.tech_info)
                .where(SecurityEvent.station_id == STATION, SecurityEvent.type == TRUST_EVENT)
                .order_by(SecurityEvent.id)
            )
            found = [str(t) for t in rows.scalars()]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_csms_root_rotated_over_ocpp_and_the_last_one_kept(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    old_pki = TlsPki.create(tmp_path / "tls")
    old_root = load_certificate(old_pki.csms_ca_pem.read_bytes())
    new_pki, new_root = new_csms_root(old_pki, tmp_path / "tls-2027")
    state = provision_charger(
        tmp_path, pki, factory_bundle, old_pki, STATION, PASSWORD, certificate=False
    )
    roots_file = state.csms_roots_path

    async with (
        running_csms(tmp_path / "old", old_pki) as old,
        running_csms(tmp_path / "new", new_pki) as new,
    ):
        for csms in (old, new):
            await csms.add_station(STATION, PASSWORD, 2)
        # Before the new root is installed the charger cannot reach the new server.
        refused = await try_connect(
            new.url + STATION, ssl_context=station_tls.client_context(state)
        )
        assert isinstance(refused, str) and "CERTIFICATE_VERIFY_FAILED" in refused

        async with running_agent(state, old.url):
            cp = await connected(old)
            # OCPP M05.FR.07: garbage, a leaf (not a CA) and a weak key are refused.
            leaf = new_pki.server_cert.read_text()
            for pem, why in (
                (GARBAGE, "not a PEM X.509 certificate"),
                (leaf, "not a CA certificate"),
                (weak_rsa_root(), "the key has 1024 bits (< 2048)"),
            ):
                answer = await cp.install_certificate(CSMS_ROOT, pem)
                assert (answer.status, answer.reason_code) == ("Rejected", "InvalidCertificate")
                assert why in (answer.additional_info or "")
            assert roots_file.read_bytes() == old_pki.csms_ca_pem.read_bytes()

            new_pem = certificate_pem(new_root)
            assert await cp.install_certificate(CSMS_ROOT, new_pem) == CertificateAnswer("Accepted")
            # Installed again: Accepted, and still one copy.
            assert await cp.install_certificate(CSMS_ROOT, new_pem) == CertificateAnswer("Accepted")
            assert x509.load_pem_x509_certificates(roots_file.read_bytes()) == [old_root, new_root]
            listed = await cp.get_installed_certificate_ids([CSMS_ROOT])
            assert (listed.status, listed.certificates) == ("Accepted", ids(old_root, new_root))
            manufacturer = await cp.get_installed_certificate_ids(["ManufacturerRootCertificate"])
            assert [c.certificate_type for c in manufacturer.certificates] == [
                "ManufacturerRootCertificate"
            ]

            # The old root verifies this very connection and the new one does not: keep it.
            in_use = await cp.delete_certificate(certificate_hash_data(old_root))
            assert (in_use.status, in_use.reason_code) == ("Failed", "InUse")
            events = await trust_events(old, 1)
            assert len(events) == 1 and events[0].startswith(f"{CSMS_ROOT} installed: ")
            assert "ACME CSMS Root 2027" in events[0]

        # The operator moves the fleet: the charger gets in with the new root alone.
        async with running_agent(state, new.url):
            cp = await connected(new)
            deleted = await cp.delete_certificate(certificate_hash_data(old_root))
            assert deleted == CertificateAnswer("Accepted")
            assert await cp.delete_certificate(certificate_hash_data(old_root)) == (
                CertificateAnswer("NotFound")
            )
            listed = await cp.get_installed_certificate_ids([CSMS_ROOT])
            assert listed.certificates == ids(new_root)

            last = await cp.delete_certificate(certificate_hash_data(new_root))
            assert (last.status, last.reason_code) == ("Failed", "LastRoot")
            assert x509.load_pem_x509_certificates(roots_file.read_bytes()) == [new_root]
            events = await trust_events(new, 1)
            assert len(events) == 1 and events[0].startswith(f"{CSMS_ROOT} deleted: ")
            assert certificate_fingerprint(old_root)[:16] in events[0]

        # The old server is no longer trusted.
        refused = await try_connect(
            old.url + STATION, ssl_context=station_tls.client_context(state)
        )
        assert isinstance(refused, str) and "CERTIFICATE_VERIFY_FAILED" in refused
