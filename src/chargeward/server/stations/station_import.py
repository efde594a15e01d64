"""Import stations provisioned at the factory (``POST /api/v1/stations/import``).

The factory sends public data and an argon2id hash of each station's BasicAuthPassword; the
hash becomes the station's ``password_hash``, so the charger logs in with the password that
only it holds.  A batch is imported whole or not at all, with one audit entry per station.

    await import_stations(s, [StationImport(...)], actor="factory", now=now)

"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError
from cryptography import x509
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto import station_passwords
from chargeward.crypto.pki import (
    certificate_common_name,
    certificate_fingerprint,
    describe_certificate,
    load_certificate,
)
from chargeward.errors import BundleError, Conflict, TrustError
from chargeward.limits import DEFAULT_SERVER_LIMITS, ServerLimits
from chargeward.model.targets import check_customer
from chargeward.server.fleet.station_registry import check_station_id
from chargeward.server.stations.station_certificates import set_current
from chargeward.server.store.tables import Station

# At least the cost the server itself uses for station secrets (ADR 0006); a costlier hash
# is accepted and re-hashed at that cost on the station's first login.
MIN_MEMORY_KIB = station_passwords.STATION_SECRET_MEMORY_KIB
MIN_TIME_COST = station_passwords.STATION_SECRET_TIME_COST


@dataclass(frozen=True)
class StationImport:
    station_id: str
    serial_number: str
    model: str
    vendor: str
    customer: str | None
    password_hash: str
    device_certificate_pem: str


def check_argon2id_hash(value: str) -> str:
    """Accept only an argon2id hash string of at least the station-secret cost."""
    refused = BundleError(
        "password_hash must be an argon2id hash ('$argon2id$v=19$m=...'); "
        "plaintext passwords and other hash schemes are refused"
    )
    if not value.startswith("$argon2id$"):
        raise refused
    try:
        params = extract_parameters(value)
    except (InvalidHashError, ValueError) as e:
        raise refused from e
    if params.type is not Type.ID:
        raise refused
    if params.memory_cost < MIN_MEMORY_KIB or params.time_cost < MIN_TIME_COST:
        raise BundleError(
            f"password_hash is too cheap (m={params.memory_cost}, t={params.time_cost}); "
            f"at least m={MIN_MEMORY_KIB}, t={MIN_TIME_COST}"
        )
    return value


def _check(item: StationImport) -> x509.Certificate:
    """Validate one entry; returns its device certificate."""
    try:
        check_station_id(item.station_id)
        check_customer(item.customer)
        check_argon2id_hash(item.password_hash)
        cert = load_certificate(item.device_certificate_pem)
        if certificate_common_name(cert) != item.serial_number:
            raise BundleError("the device certificate's CN is not the serial number")
        if describe_certificate(cert).is_ca:
            raise BundleError("the device certificate is a CA certificate")
    except (ValueError, BundleError, TrustError) as e:
        raise BundleError(f"station {item.station_id}: {e}") from e
    return cert


async def import_stations(
    s: AsyncSession,
    items: Sequence[StationImport],
    *,
    actor: str,
    now: dt.datetime,
    limits: ServerLimits = DEFAULT_SERVER_LIMITS,
) -> list[str]:
    """Register every station in ``items`` (all or none, at most ``limits.import_stations``);
    returns their ids."""
    if not items:
        raise BundleError("nothing to import")
    if len(items) > limits.import_stations:
        raise BundleError(f"at most {limits.import_stations} stations per import")
    certs = [_check(item) for item in items]
    fingerprints = [certificate_fingerprint(cert) for cert in certs]
    for what, values in (
        ("station id", [i.station_id for i in items]),
        ("serial number", [i.serial_number for i in items]),
        ("device certificate", fingerprints),
    ):
        if len(set(values)) != len(values):
            dup = next(v for v in values if values.count(v) > 1)
            raise BundleError(f"{what} {dup} appears more than once in the import")
    ids = [i.station_id for i in items]
    existing: list[str] = []
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        existing += (await s.scalars(select(Station.id).where(Station.id.in_(chunk)))).all()
    if existing:
        shown = ", ".join(sorted(existing)[:5]) + (" ..." if len(existing) > 5 else "")
        raise Conflict(f"{len(existing)} station(s) already registered: {shown}")
    for item, cert, fingerprint in zip(items, certs, fingerprints, strict=True):
        row = Station(
            id=item.station_id,
            password_hash=item.password_hash,
            model=item.model,
            vendor=item.vendor,
            serial_number=item.serial_number,
            customer=item.customer,
            device_certificate_sha256=fingerprint,
            connected=False,
            connector_status={},
            created_at=now,
        )
        # The device certificate is the station's current certificate until its first
        # renewal retires it (ADR 0022).
        set_current(row, cert)
        s.add(row)
        await audit.record(
            s,
            actor=actor,
            action="station.import",
            target=item.station_id,
            details={
                "serial_number": item.serial_number,
                "model": item.model,
                "vendor": item.vendor,
                "customer": item.customer,
                "device_certificate_sha256": fingerprint,
            },
            now=now,
        )
    return ids
