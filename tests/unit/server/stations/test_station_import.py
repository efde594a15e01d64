"""Importing factory-provisioned stations: argon2id hashes only, certificate CN = serial."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type

from chargeward import audit
from chargeward.crypto import certificate_pem, create_root_ca
from chargeward.crypto.keys import generate_key
from chargeward.crypto.pki import issue_device_certificate
from chargeward.crypto.sealing import generate_device_key_pair
from chargeward.crypto.station_passwords import verify_station_secret
from chargeward.errors import BundleError, Conflict
from chargeward.server.auth.passwords import hash_password
from chargeward.server.fleet import station_registry
from chargeward.server.stations.station_import import StationImport, import_stations
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)
PASSWORD = "Factory-Password-23456789abc"


@pytest.fixture(scope="module")
def make_item(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], StationImport]:
    d = tmp_path_factory.mktemp("import-ca")
    ca_key = generate_key(f"file:{d}/ca.key", lambda: b"import-test-passphrase")
    ca = create_root_ca(ca_key, "ACME Charger CA", "ACME")
    password_hash = hash_password(PASSWORD)

    def make(serial: str) -> StationImport:
        cert = issue_device_certificate(
            ca_key,
            ca,
            generate_device_key_pair().public_key,
            serial,
            "ACME",
            not_after=NOW + dt.timedelta(days=365),
            now=NOW,
        )
        return StationImport(
            serial, serial, "AC22", "ACME", "acme", password_hash, certificate_pem(cert)
        )

    return make


async def test_import_stores_the_hash_so_the_charger_can_log_in(
    db: Database, make_item: Callable[[str], StationImport]
) -> None:
    """On SQLite and on PostgreSQL."""
    items = [make_item("CP-1"), make_item("CP-2")]
    async with db.session() as s:
        assert await import_stations(s, items, actor="factory", now=NOW) == ["CP-1", "CP-2"]
    async with db.session() as s:
        assert verify_station_secret(await station_registry.password_hash(s, "CP-1"), PASSWORD)
        row = await s.get(Station, "CP-2")
        assert row is not None and row.customer == "acme" and row.serial_number == "CP-2"
        assert row.device_certificate_sha256 is not None
        entries = await audit.entries(s, target="CP-2", limit=10)
        assert [e.action for e in entries] == ["station.import"]
        with pytest.raises(Conflict, match="already registered: CP-1"):
            await import_stations(s, [make_item("CP-1")], actor="factory", now=NOW)


@pytest.mark.parametrize(
    "password_hash",
    [
        PASSWORD,  # a plaintext password
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",  # SHA-256
        "$2b$12$KIXQJ0kq1I6Kx1u1zFQ0ReL0x7y0H6ZpB7bqU1mC2XkQ0Zq5bZ9mW",  # bcrypt
        PasswordHasher(type=Type.I).hash(PASSWORD),  # argon2i
        "$argon2id$v=19$m=65536,t=3,p=4$broken",
    ],
    ids=["plaintext", "sha256", "bcrypt", "argon2i", "broken-argon2id"],
)
async def test_anything_but_an_argon2id_hash_is_refused(
    tmp_path: Path, make_item: Callable[[str], StationImport], password_hash: str
) -> None:
    db = await Database.open(data_dir=tmp_path)
    try:
        async with db.session() as s:
            item = replace(make_item("CP-1"), password_hash=password_hash)
            with pytest.raises(BundleError, match="must be an argon2id hash"):
                await import_stations(s, [item], actor="factory", now=NOW)
    finally:
        await db.close()


async def test_cheap_hashes_wrong_names_and_duplicates_are_refused(
    tmp_path: Path, make_item: Callable[[str], StationImport]
) -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=1024).hash(PASSWORD)
    a = make_item("CP-1")
    cases = [
        ([replace(a, password_hash=cheap)], "too cheap"),
        ([replace(a, serial_number="CP-9")], "CN is not the serial number"),
        ([replace(a, device_certificate_pem="garbage")], "not a PEM X.509 certificate"),
        ([replace(a, station_id="bad id")], "station id must be"),
        ([a, replace(a, station_id="CP-2")], "serial number CP-1 appears more than once"),
        ([a, replace(make_item("CP-2"), station_id="CP-1")], "station id CP-1 appears"),
        ([], "nothing to import"),
    ]
    db = await Database.open(data_dir=tmp_path)
    try:
        for items, message in cases:
            async with db.session() as s:
                with pytest.raises(BundleError, match=message):
                    await import_stations(s, items, actor="factory", now=NOW)
        async with db.session() as s:
            assert await s.get(Station, "CP-1") is None  # all or nothing
    finally:
        await db.close()
