"""A release's declared reported versions (ADR 0037), on SQLite and PostgreSQL: a station that
boots release 1.1.0 reporting ``TP-FW 1.1.0-b7`` is running 1.1.0 for drift detection (batched
and single boots), for a campaign's success and for the exposure query; anything else it
reports is still drift."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from chargeward.audit.sequencer import settle
from chargeward.campaign import machine
from chargeward.campaign.spec import parse_spec
from chargeward.model.reported import ReportedVersions, parse_option
from chargeward.ocpp.csms import BootInfo
from chargeward.release.bundle import verify_bundle
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import campaign_runs, campaigns, release_catalog, update_orders
from chargeward.server.rollout.exposure import exposure
from chargeward.server.stations import station_reports
from chargeward.server.stations.sink import DbSink
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Alert, ReleaseComponent, Station
from chargeward.supply.advisories import parse_advisory
from tests.support.fleet import MODEL, Pki

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
THIRD_PARTY = "TP-FW 1.1.0-b7"
ZLIB = {
    "id": "CVE-2022-37434",
    "affected": [
        {
            "package": {"ecosystem": "GIT", "name": "zlib", "purl": "pkg:generic/zlib"},
            "versions": ["1.2.12"],
        }
    ],
}


@pytest.fixture
def fleet_pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "fleet-pki")


async def _release(
    db: Database, tmp_path: Path, fleet_pki: Pki, version: str, reported: ReportedVersions | None
) -> str:
    bundle = fleet_pki.bundle(tmp_path / f"r-{version}.cwb", version, 2)
    now = dt.datetime.now(dt.UTC)  # the fixture certificates are valid from today
    verified = verify_bundle(bundle, [fleet_pki.root_cert], workdir=tmp_path / version, now=now)
    async with db.session() as s:
        view = await release_catalog.store_release(
            s, verified, BlobStore(tmp_path / "blobs"), actor="alice", now=NOW, reported=reported
        )
    return view.id


def _declared() -> ReportedVersions:
    return parse_option("reported_version", [f"{MODEL}={THIRD_PARTY}"])


async def _fleet(db: Database, n: int) -> list[str]:
    ids = [f"CP-{i:02d}" for i in range(n)]
    async with db.session() as s:
        for sid in ids:
            await station_registry.register_station(s, sid, actor="alice", model=MODEL, now=NOW)
    return ids


def _boot(version: str, reason: str = "FirmwareUpdate") -> BootInfo:
    return BootInfo(reason=reason, model=MODEL, vendor="ACME", firmware_version=version,
                    serial_number=None)  # fmt: skip


async def _drift(db: Database) -> list[str]:
    async with db.snapshot() as s:
        found = await s.scalars(select(Alert).where(Alert.kind == "firmware_drift"))
        return sorted(a.station_id for a in found.all())


async def _expected(db: Database, sid: str) -> dict[str, str]:
    async with db.snapshot() as s:
        row = await s.get(Station, sid)
        assert row is not None
        return dict(row.expected_firmware)


async def test_a_batch_of_boots_reporting_the_declared_string_is_no_drift(
    db: Database, tmp_path: Path, fleet_pki: Pki
) -> None:
    """Prefetched pending updates (the group-commit path) carry the declaration."""
    release = await _release(db, tmp_path, fleet_pki, "1.1.0", _declared())
    ids = await _fleet(db, 3)
    first = DbSink(db, clock=lambda: NOW)
    await asyncio.gather(*(first.boot(sid, _boot("1.0.0", "PowerUp")) for sid in ids))
    await first.close()
    async with db.session() as s:
        for sid in ids:
            await update_orders.create_update(
                s, sid, release, actor="alice", now=NOW, require_published=False
            )
    sink = DbSink(db, clock=lambda: NOW)
    await asyncio.gather(
        sink.boot(ids[0], _boot(THIRD_PARTY)),
        sink.boot(ids[1], _boot("1.1.0")),  # the release's own version still counts
        sink.boot(ids[2], _boot("TP-FW 1.1.0-b8")),  # declared for nobody: drift
    )
    await sink.close()
    await settle(db.session)
    assert await _drift(db) == [ids[2]]
    assert await _expected(db, ids[0]) == {"main": THIRD_PARTY}
    assert await _expected(db, ids[1]) == {"main": "1.1.0"}
    assert await _expected(db, ids[2]) == {"main": "1.0.0"}


async def test_a_single_boot_reads_the_declaration_and_undeclared_releases_do_not_match(
    db: Database, tmp_path: Path, fleet_pki: Pki
) -> None:
    """The query path (no prefetch); a release without a declaration keeps today's rule."""
    declared = await _release(db, tmp_path, fleet_pki, "1.1.0", _declared())
    plain = await _release(db, tmp_path, fleet_pki, "1.2.0", None)
    [sid, other] = await _fleet(db, 2)
    for station, release in ((sid, declared), (other, plain)):
        async with db.session() as s:
            await station_reports.record_boot(
                s, station, reason="PowerUp", firmware_version="1.0.0", model=MODEL,
                vendor="ACME", serial_number=None, now=NOW,
            )  # fmt: skip
            await update_orders.create_update(
                s, station, release, actor="alice", now=NOW, require_published=False
            )
    for station, version in ((sid, THIRD_PARTY), (other, "TP-FW 1.2.0-b1")):
        async with db.session() as s:
            await station_reports.record_boot(
                s, station, reason="FirmwareUpdate", firmware_version=version, model=MODEL,
                vendor="ACME", serial_number=None, now=NOW,
            )  # fmt: skip
    await settle(db.session)
    assert await _drift(db) == [other]
    assert await _expected(db, sid) == {"main": THIRD_PARTY}


async def test_a_campaign_counts_a_station_reporting_the_declared_string_as_succeeded(
    db: Database, tmp_path: Path, fleet_pki: Pki
) -> None:
    release = await _release(db, tmp_path, fleet_pki, "1.1.0", _declared())
    [sid] = await _fleet(db, 1)
    spec = {"name": "c1", "release": release, "stages": {"canary": 1, "then": ["100%"]},
            "jitter": 0, "target": {"models": [MODEL]}, "soak": "10m"}  # fmt: skip
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(spec), actor="alice", now=NOW)
    steps: list[machine.Event] = [
        machine.StageStarted(NOW),
        machine.Dispatched(NOW, 7),
        machine.Response(NOW, "Accepted"),
        *(machine.Status(NOW, x) for x in ("Downloading", "Downloaded", "Installing")),
        machine.Status(NOW, "InstallRebooting"),
    ]
    async with db.session() as s:
        for event in steps:
            await campaign_runs.on_station_event(s, sid, event)
        assert (await campaigns.station_run(s, view.id, sid)).state == "rebooting"
    async with db.session() as s:
        await station_reports.record_boot(
            s, sid, reason="FirmwareUpdate", firmware_version=THIRD_PARTY, model=MODEL,
            vendor="ACME", serial_number=None, now=NOW,
        )  # fmt: skip
        assert (await campaigns.station_run(s, view.id, sid)).state == "soaking"
    async with db.session() as s:
        later = NOW + dt.timedelta(minutes=11)
        await campaign_runs.on_station_event(s, sid, machine.Tick(later))
        assert (await campaigns.station_run(s, view.id, sid)).state == "succeeded"


async def test_exposure_counts_a_station_reporting_the_declared_string(
    db: Database, tmp_path: Path, fleet_pki: Pki
) -> None:
    release = await _release(db, tmp_path, fleet_pki, "1.1.0", _declared())
    async with db.session() as s:
        s.add(ReleaseComponent(
            release_id=release, name="zlib", version="1.2.12", purl="pkg:generic/zlib@1.2.12"
        ))  # fmt: skip
        for sid, version in (("CP-A", THIRD_PARTY), ("CP-B", "TP-FW 1.1.0-b8")):
            s.add(Station(id=sid, password_hash="x", model=MODEL, firmware_version=version,
                          created_at=NOW))  # fmt: skip
    advisory = parse_advisory(json.dumps(ZLIB).encode(), "CVE-2022-37434.json")
    async with db.snapshot() as s:
        report = await exposure(s, advisory, now=NOW)
    assert [st.station_id for st in report.affected] == ["CP-A"]
    assert report.affected[0].releases == [release]
    assert report.unknown == ["CP-B"]
