"""Certificate management on stations (OCPP M03-M05): checks and audit around each request.

Installing or deleting a trust anchor is privileged: the request is audited under a new
transaction id before it goes out, and the station's answer under the same id after::

    async with db.session() as s:
        order = await begin_install(s, "CP-1", MANUFACTURER_ROOT, pem, trusted_roots=roots,
                                    actor="alice", now=now)
    answer = await cp.install_certificate(order.certificate_type, pem)
    async with db.session() as s:
        await record_answer(s, order, answer, now=now)

A ManufacturerRootCertificate goes only to stations if this server trusts it for releases
(``chargeward server --manufacturer-root``): an API token alone cannot plant a new firmware
trust anchor, and a charger never holds a root no release of this server could chain to.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto.pki import (
    CertificateHashData,
    certificate_fingerprint,
    load_certificate,
)
from chargeward.errors import NotFound, UntrustedCertificate
from chargeward.ocpp.csms import CertificateAnswer
from chargeward.server.fleet.station_registry import station_actor
from chargeward.server.store.tables import Station

MANUFACTURER_ROOT = "ManufacturerRootCertificate"
CertificateType = Literal[
    "V2GRootCertificate", "MORootCertificate", "CSMSRootCertificate", "ManufacturerRootCertificate"
]
MAX_CERTIFICATE_CHARS = 5500  # InstallCertificateRequest.certificate


@dataclass(frozen=True)
class CertificateOrder:
    """One audited certificate request to one station."""

    transaction_id: str
    station_id: str
    action: str  # "install" or "delete"
    certificate_type: str | None = None


async def require_station(s: AsyncSession, station_id: str) -> None:
    if await s.get(Station, station_id) is None:
        raise NotFound(f"no station {station_id!r}")


def _certificate_details(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "sha256": certificate_fingerprint(cert),
    }


async def begin_install(
    s: AsyncSession,
    station_id: str,
    certificate_type: CertificateType,
    certificate_pem: str,
    *,
    trusted_roots: Sequence[x509.Certificate],
    actor: str,
    now: dt.datetime,
) -> CertificateOrder:
    """Check and audit an InstallCertificate before it is sent.

    Raises :class:`NotFound` (no such station) or :class:`UntrustedCertificate` (not one PEM
    certificate, longer than OCPP allows, or a ManufacturerRootCertificate this server does
    not trust).  Whether it is a usable CA certificate is the station's decision (M05).
    """
    await require_station(s, station_id)
    if len(certificate_pem) > MAX_CERTIFICATE_CHARS:
        raise UntrustedCertificate(f"certificate longer than OCPP's {MAX_CERTIFICATE_CHARS}")
    cert = load_certificate(certificate_pem)
    details = _certificate_details(cert)
    if certificate_type == MANUFACTURER_ROOT and details["sha256"] not in {
        certificate_fingerprint(root) for root in trusted_roots
    }:
        raise UntrustedCertificate(
            f"{details['subject']} is not a Manufacturer Root CA this server trusts; "
            "add it with 'chargeward server --manufacturer-root' first"
        )
    order = CertificateOrder(audit.new_transaction_id(), station_id, "install", certificate_type)
    await audit.record(
        s,
        actor=actor,
        action="certificate.install_requested",
        target=station_id,
        transaction_id=order.transaction_id,
        details={"certificate_type": certificate_type, **details},
        now=now,
    )
    return order


async def begin_delete(
    s: AsyncSession,
    station_id: str,
    hash_data: CertificateHashData,
    *,
    actor: str,
    now: dt.datetime,
) -> CertificateOrder:
    """Audit a DeleteCertificate before it is sent; raises :class:`NotFound`."""
    await require_station(s, station_id)
    order = CertificateOrder(audit.new_transaction_id(), station_id, "delete")
    await audit.record(
        s,
        actor=actor,
        action="certificate.delete_requested",
        target=station_id,
        transaction_id=order.transaction_id,
        details=dict(vars(hash_data)),
        now=now,
    )
    return order


async def record_answer(
    s: AsyncSession, order: CertificateOrder, answer: CertificateAnswer, *, now: dt.datetime
) -> None:
    """Audit the station's answer under the order's transaction id."""
    await audit.record(
        s,
        actor=station_actor(order.station_id),
        action=f"certificate.{order.action}_response",
        target=order.station_id,
        transaction_id=order.transaction_id,
        details={
            "status": answer.status,
            "reason_code": answer.reason_code,
            "additional_info": answer.additional_info,
        },
        now=now,
    )
