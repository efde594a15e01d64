"""Campaigns only on releases the chargers accept, on SQLite and PostgreSQL: a release below the
known rollback floor of some target stations is refused (or, with the audited override, those
stations are left out), and a fleet rollback goes only to a release at or above the floors."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign.spec import parse_spec
from chargeward.errors import Conflict
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import campaign_releases, campaign_runs, campaigns
from chargeward.server.store.db import Database
from chargeward.server.store.tables import CampaignStation, FirmwareUpdate, Station
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import stored_release

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)


async def _release(db: Database, tmp_path: Path, pki: Pki, version: str, sv: int, at: int) -> str:
    return await stored_release(db, tmp_path, pki, version, sv, NOW + dt.timedelta(minutes=at))


async def _station(s: AsyncSession, sid: str, running: str) -> None:
    await station_registry.register_station(s, sid, actor="alice", model=MODEL, now=NOW)
    row = await s.get(Station, sid)
    assert row is not None
    row.firmware_version = running


def _spec(name: str, release: str) -> dict[str, object]:
    return {"name": name, "release": release, "stages": {"canary": 1, "then": ["100%"]},
            "jitter": 0, "target": {"models": [MODEL]}}  # fmt: skip


async def test_below_floor_refused_and_the_audited_override_leaves_those_stations_out(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    old = await _release(db, tmp_path, pki, "1.0.0", 1, 0)
    new = await _release(db, tmp_path, pki, "1.1.0", 2, 1)
    async with db.session() as s:
        await _station(s, "CP-RUN", "1.1.0")  # reports running 1.1.0: floor 2
        await _station(s, "CP-INST", "9.9.9")  # an unknown version, but 1.1.0 installed
        await _station(s, "CP-OLD", "1.0.0")  # floor 1
        s.add(FirmwareUpdate(
            transaction_id="t-1", station_id="CP-INST", release_id=new, component="main",
            requested_by="alice", outcome="succeeded", created_at=NOW, updated_at=NOW,
        ))  # fmt: skip
    async with db.snapshot() as s:
        assert await campaign_releases.known_floors(s, ["CP-RUN", "CP-INST", "CP-OLD"]) == {
            "CP-RUN": 2, "CP-INST": 2, "CP-OLD": 1,
        }  # fmt: skip

    async with db.session() as s:
        with pytest.raises(Conflict) as refused:
            await campaigns.create_campaign(
                s, parse_spec(_spec("down", old)), actor="alice", now=NOW
            )
    message = str(refused.value)
    assert "security version 1, below the rollback floor of 2 of the 3 target stations" in message
    assert "(CP-INST, CP-RUN) at rollback floor 2" in message and "allow_below_floor" in message
    async with db.snapshot() as s:
        assert not [e for e in await audit.entries(s) if e.action == "campaign.created"]

    async with db.session() as s:
        view = await campaigns.create_campaign(
            s, parse_spec(_spec("down", old)), actor="alice", now=NOW, allow_below_floor=True
        )
    async with db.snapshot() as s:
        enrolled = await s.get(CampaignStation, (view.id, "CP-OLD"))
        assert enrolled is not None and await s.get(CampaignStation, (view.id, "CP-RUN")) is None
        [entry] = await audit.entries(s, target=f"campaign:{view.id}")
    assert sum(st.size for st in view.stages) == 1
    assert entry.actor == "alice" and entry.details["allow_below_floor"] is True
    assert entry.details["left_out_below_floor"] == {
        "count": 2, "highest_floor": 2, "stations": {"CP-INST": 2, "CP-RUN": 2},
    }  # fmt: skip

    # A release at the floor is accepted without any override.
    async with db.session() as s:
        ok = await campaigns.create_campaign(
            s, parse_spec({**_spec("up", new), "target": {"stations": ["CP-RUN"]}}),
            actor="alice", now=NOW,
        )  # fmt: skip
    assert ok.status == "running"


async def _took(db: Database, campaign_id: int, release: str) -> None:
    """Every station of the campaign installed its release (the update succeeded)."""
    async with db.session() as s:
        for sid, (row, run) in (await campaign_runs.load_runs(s, campaign_id)).items():
            campaign_runs.store_run(row, replace(run, state="succeeded"), NOW)
            s.add(FirmwareUpdate(
                transaction_id=f"t-{sid}", station_id=sid, release_id=release, component="main",
                requested_by="campaign", outcome="succeeded", created_at=NOW, updated_at=NOW,
            ))  # fmt: skip


async def test_fleet_rollback_chooses_a_release_at_the_floor_or_says_to_re_sign(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    previous = await _release(db, tmp_path, pki, "1.0.0", 1, 0)
    current = await _release(db, tmp_path, pki, "1.1.0", 2, 1)
    async with db.session() as s:
        for sid in ("CP-1", "CP-2"):
            await _station(s, sid, "1.0.0")
        view = await campaigns.create_campaign(
            s, parse_spec(_spec("fwd", current)), actor="alice", now=NOW
        )
    await _took(db, view.id, current)

    # The only earlier build is below the floor 2 the stations reached: refused, nothing aborted.
    for chosen in (None, previous):
        async with db.session() as s:
            with pytest.raises(Conflict) as refused:
                await campaigns.rollback(s, view.id, to_release=chosen, actor="bob", now=NOW)
        assert str(refused.value).startswith(
            "release 1.0.0 has security version 1, below the rollback floor 2 of 2 stations"
        )
        assert "`chargeward release build --version 1.0.0 --security-version 2 …`" in str(
            refused.value
        )
    async with db.snapshot() as s:
        assert (await campaigns.campaign_view(s, view.id)).status == "running"

    # The previous build re-signed with security version 2: with a TUF repository it must be
    # published first; without one it is chosen without being named.
    resigned = await _release(db, tmp_path, pki, "1.0.1", 2, 2)
    async with db.session() as s:
        with pytest.raises(Conflict, match=r"1\.0\.1 is not published"):
            await campaigns.rollback(
                s, view.id, to_release=resigned, actor="bob", now=NOW, require_published=True
            )
    await _release(db, tmp_path, pki, "1.2.0", 3, 3)  # accepted, but a newer version: no roll back
    async with db.session() as s:
        back = await campaigns.rollback(s, view.id, actor="bob", now=NOW)
    assert back.release_id == resigned and sum(st.size for st in back.stages) == 2
    async with db.snapshot() as s:
        assert (await campaigns.campaign_view(s, view.id)).status == "aborted"
        offered = await campaign_releases.candidates(
            s, require_published=False, station_ids=["CP-1", "CP-2"]
        )
    assert {(c.version, c.below_floor) for c in offered} == {
        ("1.0.0", 2), ("1.1.0", 0), ("1.0.1", 0), ("1.2.0", 0),
    }  # fmt: skip
