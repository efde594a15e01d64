"""Station, release, firmware-update and log services round trip on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from chargeward import audit
from chargeward.release.bundle import verify_bundle
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import release_catalog, update_orders
from chargeward.server.stations import logs, station_reports
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.fleet import Pki

# Not UTC on purpose: storage must hand back the same instant, as UTC.
PLUS_ONE = dt.timezone(dt.timedelta(hours=1))


async def test_station_update_and_log_round_trip(
    db: Database, tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    NOW = dt.datetime.now(PLUS_ONE)
    verified = verify_bundle(factory_bundle, [pki.root_cert], workdir=tmp_path / "x", now=NOW)
    async with db.session() as s:
        password = await station_registry.register_station(
            s, "CP-1", actor="alice", model="AC22", now=NOW
        )
        release = await release_catalog.store_release(
            s, verified, BlobStore(tmp_path / "blobs"), actor="alice", now=NOW
        )
    async with db.session() as s:
        await station_registry.set_connected(s, "CP-1", True, now=NOW)
        await station_reports.record_boot(
            s,
            "CP-1",
            reason="PowerUp",
            firmware_version="0.9.0",
            model="AC22",
            vendor="ACME",
            serial_number="CP-1",
            now=NOW,
        )
        await station_reports.record_connector_status(
            s, "CP-1", evse_id=1, connector_id=1, status="Available", now=NOW
        )
        order = await update_orders.create_update(
            s, "CP-1", release.id, actor="alice", now=NOW, require_published=False
        )
    async with db.session() as s:
        await update_orders.set_update_response(s, order.request_id, "Accepted", now=NOW)
        for status in ("Downloading", "Downloaded", "Installing", "Installed"):
            await station_reports.record_firmware_status(
                s, "CP-1", status=status, request_id=order.request_id, now=NOW
            )
        log = await logs.begin_request(
            s,
            "CP-1",
            "SecurityLog",
            oldest=NOW - dt.timedelta(days=1),
            latest=None,
            actor="alice",
            now=NOW,
        )
        await logs.record_response(s, log.request_id, "Accepted", "security.log", now=NOW)
        await logs.record_status(s, "CP-1", status="Uploaded", request_id=log.request_id, now=NOW)

    async with db.snapshot() as s:
        row = await s.get(Station, "CP-1")
        assert row is not None and row.password_hash != password  # stored hashed
        assert row.connected and row.firmware_version == "0.9.0"
        assert list(row.connector_status.values()) == ["Available"]  # a JSON column
        assert row.last_seen == NOW and row.last_seen.tzinfo == dt.UTC
        view = await update_orders.update_view(s, order.transaction_id)
        records = await logs.list_logs(s, "CP-1")
        trail = await audit.entries(s, transaction_id=order.transaction_id)
    assert (view.response_status, view.last_status, view.outcome) == (
        "Accepted",
        "Installed",
        "succeeded",
    )
    assert view.created_at == NOW and view.created_at.utcoffset() == dt.timedelta(0)
    assert [(r.request_id, r.response_status, r.last_status) for r in records] == [
        (log.request_id, "Accepted", "Uploaded")
    ]
    assert records[0].oldest == NOW - dt.timedelta(days=1)
    assert [e.details.get("status") for e in trail if e.action == "station.firmware_status"] == [
        "Downloading",
        "Downloaded",
        "Installing",
        "Installed",
    ]


async def test_heartbeats_are_written_in_one_batch(db: Database) -> None:
    """Heartbeats only move last_seen: the sink gathers them and writes one statement."""
    from chargeward.server.stations.sink import DbSink

    start = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    async with db.session() as s:
        for sid in ("CP-1", "CP-2"):
            await station_registry.register_station(s, sid, actor="alice", now=start)
    clock = iter([start + dt.timedelta(seconds=n) for n in (10, 20, 30)])
    sink = DbSink(db, clock=lambda: next(clock), seen_flush_interval=3600)
    await sink.heartbeat("CP-1")
    await sink.heartbeat("CP-2")
    await sink.heartbeat("CP-1")  # the newest time wins
    async with db.snapshot() as s:
        assert (await s.get(Station, "CP-1")).last_seen is None  # type: ignore[union-attr]
    await sink.flush_seen()
    async with db.snapshot() as s:
        seen = {sid: (await s.get(Station, sid)).last_seen for sid in ("CP-1", "CP-2")}  # type: ignore[union-attr]
    assert seen == {
        "CP-1": start + dt.timedelta(seconds=30),
        "CP-2": start + dt.timedelta(seconds=20),
    }
    assert sink._flusher is not None
    sink._flusher.cancel()
