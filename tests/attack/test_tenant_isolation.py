"""A release locked to one customer, sent to another customer's station by the server.

The reference agent refuses such a release itself (the customer in its signed TUF listing,
``tests/attack/test_repository_attacks.py``), but a third-party station installs whatever
correctly signed firmware it is sent.  So the server refuses to record the UpdateFirmware:
the operator's single update and every campaign dispatch go through
``services.create_update``.  Real bundle, real verification, real database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from chargeward.errors import Conflict
from chargeward.release.bundle import build_bundle, verify_bundle
from chargeward.server import services
from chargeward.server.blobs import BlobStore
from chargeward.server.db import Database
from chargeward.server.tables import FirmwareUpdate, Station
from tests.support.fleet import MODEL, Pki

NOW = dt.datetime.now(dt.UTC)  # the test PKI is valid from now on


async def test_customer_locked_release_dispatch_to_another_customers_station_refused(
    tmp_path: Path, pki: Pki
) -> None:
    payload = tmp_path / "fleet-a.payload"
    payload.write_bytes(b"firmware for fleet-a only\n" * 512)
    bundle = tmp_path / "fleet-a-1.1.0.cwb"
    build_bundle(
        payload,
        bundle,
        version="1.1.0",
        security_version=2,
        hardware_models=[MODEL],
        signer=pki.signing_signer,
        signing_certificate=pki.signing_cert,
        customer="fleet-a",
    )
    verified = verify_bundle(bundle, [pki.root_cert], workdir=tmp_path / "work", now=NOW)
    db = await Database.open(data_dir=tmp_path / "srv")
    try:
        async with db.session() as s:
            release = await services.store_release(
                s, verified, BlobStore(tmp_path / "srv" / "blobs"), actor="alice", now=NOW
            )
            for station_id, customer in (("CP-A", "fleet-a"), ("CP-B", "fleet-b"), ("CP-0", None)):
                await services.register_station(s, station_id, actor="alice", model=MODEL, now=NOW)
                row = await s.get(Station, station_id)
                assert row is not None
                row.customer = customer
        assert release.customer == "fleet-a"
        for other, owner in (("CP-B", "fleet-b"), ("CP-0", "no customer")):
            async with db.session() as s:
                with pytest.raises(Conflict) as refused:
                    await services.create_update(
                        s, other, release.id, actor="alice", now=NOW, require_published=False
                    )
            assert str(refused.value) == (
                f"release 1.1.0 is locked to customer fleet-a, station {other} belongs to {owner}"
            )
        async with db.session() as s:  # the customer's own station gets it
            order = await services.create_update(
                s, "CP-A", release.id, actor="alice", now=NOW, require_published=False
            )
        async with db.snapshot() as s:
            rows = (await s.execute(FirmwareUpdate.__table__.select())).all()
        assert [r.station_id for r in rows] == ["CP-A"]  # nothing recorded for the others
        assert order.station_id == "CP-A"
    finally:
        await db.close()
