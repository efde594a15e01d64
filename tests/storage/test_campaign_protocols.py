"""One campaign across OCPP 2.0.1 and 1.6J stations (issue 30, points 3 and 4), on SQLite and
PostgreSQL: a 1.6 station that refused SignedUpdateFirmware and was not marked legacy is left
out and the answer says why; a station marked legacy stays in and the answer states what that
costs; the audit entry records both and the count per protocol."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from chargeward.audit.sequencer import settle
from chargeward.audit.tables import AuditEntry
from chargeward.campaign.spec import parse_spec
from chargeward.errors import Conflict
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import campaigns
from chargeward.server.rollout.campaign_protocols import LEGACY_CONSEQUENCE
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import stored_release

NOW = dt.datetime(2026, 12, 8, 10, 0, tzinfo=dt.UTC)
# id -> (protocol, marked legacy, signed update support)
FLEET = {
    "CP-201": ("2.0.1", False, None),
    "CP-16-WP": ("1.6", False, True),  # whitepaper: SignedUpdateFirmware
    "CP-16-NEW": ("1.6", False, None),  # never asked yet: tried with SignedUpdateFirmware
    "CP-16-OLD": ("1.6", False, False),  # refused it, not marked: left out
    "CP-16-MARKED": ("1.6", True, False),  # marked by an operator: plain UpdateFirmware
}


async def _fleet(
    db: Database, tmp_path: Path, pki: Pki, fleet: dict[str, tuple[str, bool, bool | None]]
) -> str:
    release = await stored_release(db, tmp_path, pki, "1.1.0", 2, NOW)
    async with db.session() as s:
        for sid, (version, marked, signed) in fleet.items():
            await station_registry.register_station(s, sid, actor="alice", model=MODEL, now=NOW)
            row = await s.get(Station, sid)
            assert row is not None
            row.firmware_version, row.connected = "1.0.0", True
            row.ocpp_version, row.legacy_firmware_update = version, marked
            row.signed_update_support = signed
    return release


def _doc(release: str, name: str = "mixed") -> dict[str, object]:
    return {"name": name, "release": release, "target": {"models": [MODEL]}, "jitter": 0,
            "stages": {"canary": "100%"}, "concurrency": {"keep_available": 0}}  # fmt: skip


async def test_a_mixed_campaign_leaves_out_what_it_cannot_update_and_says_why(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await _fleet(db, tmp_path, pki, FLEET)
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(_doc(release)), actor="alice", now=NOW)
    async with db.snapshot() as s:
        runs = {r.station_id for r, _ in await campaigns.station_runs(s, view.id)}
    assert runs == {"CP-201", "CP-16-WP", "CP-16-NEW", "CP-16-MARKED"}
    left_out, legacy = view.warnings
    assert "CP-16-OLD" in left_out and "not marked legacy_firmware_update" in left_out
    assert "CP-16-MARKED" in legacy and LEGACY_CONSEQUENCE in legacy
    await settle(db.session)
    async with db.snapshot() as s:
        created = (
            await s.scalars(
                select(AuditEntry.details).where(AuditEntry.action == "campaign.created")
            )
        ).one()
    assert created["protocols"] == {"1.6": 4, "2.0.1": 1}
    assert created["left_out_no_signed_update"] == ["CP-16-OLD"]
    assert created["legacy_stations"] == ["CP-16-MARKED"]


async def test_a_campaign_of_only_unmarked_legacy_stations_is_refused_with_the_reason(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    release = await _fleet(db, tmp_path, pki, {"CP-16-OLD": FLEET["CP-16-OLD"]})
    async with db.session() as s:
        with pytest.raises(Conflict, match=r"refused SignedUpdateFirmware.*not marked"):
            await campaigns.create_campaign(
                s, parse_spec(_doc(release, "only-old")), actor="alice", now=NOW
            )
