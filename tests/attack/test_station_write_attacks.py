"""What unauthenticated callers and stations can write (issue 26, points 3 and 8).

- failed operator logins with random usernames: a bounded number of audit leaves and
  ``login_throttle`` rows, the lockout still works, a real user's failures stay visible;
- a station flooding SecurityEventNotification: a bounded number of audit leaves and stored
  events, one summary entry saying how many were suppressed, critical types still alerting;
- unsolicited SignCertificate: nothing issued; a CSMS-triggered renewal still works, once;
- a BootNotification claiming another model, vendor or another station's serial number: the
  registry is unchanged, an alert is raised, and the next honest boot does not clear it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from chargeward import audit
from chargeward.audit.tables import AuditEntry
from chargeward.crypto.sealing import generate_device_key_pair
from chargeward.crypto.tls import build_csr
from chargeward.server.auth import lockout
from chargeward.server.fleet import alerts, fleet
from chargeward.server.stations import station_reports, station_security, write_budget
from chargeward.server.stations.station_security import renew_certificate
from chargeward.server.store.tables import BootEvent, LoginThrottle, SecurityEvent, Station
from tests.support.accounts_api import AccountsApi, User, accounts_api
from tests.support.tls import (
    SUBPROTOCOLS,
    Csms,
    TlsPki,
    running_csms,
    station_connection,
)

PASSWORD = "station-write-password-0123"
ATTACKER = "203.0.113.66"


async def _leaves(env: AccountsApi) -> int:
    async with env.state.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


async def _throttle_rows(env: AccountsApi) -> int:
    async with env.state.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(LoginThrottle)) or 0)


async def _entries(env: AccountsApi, action: str) -> list[audit.Entry]:
    async with env.state.db.session() as s:
        return [e for e in await audit.entries(s) if e.action == action]


# -- point 3a: failed logins ----------------------------------------------------------------


async def test_random_username_logins_leave_a_bounded_trace(tmp_path: Path) -> None:
    """1,000 failed logins with random usernames from one address: at most 3 audit leaves
    and a few throttle rows (before: 1,000 of each); the address lock still holds."""
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "operator")
        leaves, rows = await _leaves(env), await _throttle_rows(env)
        c = await env.client(ATTACKER)
        statuses: dict[int, int] = {}
        for _ in range(1000):
            body = {"username": f"u{uuid.uuid4().hex[:12]}", "password": "guess-guess-guess"}
            r = await c.post("/api/v1/auth/login", json=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert statuses == {401: lockout.ADDRESS_FAILURES, 429: 1000 - lockout.ADDRESS_FAILURES}
        assert await _leaves(env) - leaves <= 3
        assert await _throttle_rows(env) - rows <= 1 + lockout.UNKNOWN_NAME_BUCKETS
        # The lock still works: the address stays locked, even for the right password ...
        assert (await env.try_login(alice, address=ATTACKER)).status_code == 429
        # ... and the summary says how many failed and which names were tried (bounded).
        [summary] = await _entries(env, "auth.login_failures")
        assert summary.details["address"] == ATTACKER
        assert summary.details["failures"] == lockout.ADDRESS_FAILURES
        assert len(summary.details["usernames"]) == lockout.WINDOW_USERNAMES
        # Elsewhere alice logs in.
        assert (await env.try_login(alice, address="198.51.100.2")).status_code == 200


async def test_slow_guessing_is_bounded_per_window(tmp_path: Path) -> None:
    """Staying under the address limit (19 guesses per 16 minutes): at most two audit
    leaves per address and window, and the throttle table stays bounded."""
    async with accounts_api(tmp_path) as env:
        leaves, rows = await _leaves(env), await _throttle_rows(env)
        c = await env.client(ATTACKER)
        windows = 3
        for _ in range(windows):
            for _ in range(lockout.ADDRESS_FAILURES - 1):
                body = {"username": f"u{uuid.uuid4().hex[:12]}", "password": "guess-guess-guess"}
                r = await c.post("/api/v1/auth/login", json=body)
                assert r.status_code in (401, 429)  # 429: its unknown-name bucket is locked
            env.clock.advance(minutes=16)
        assert await _leaves(env) - leaves <= 2 * windows
        assert await _throttle_rows(env) - rows <= 1 + lockout.UNKNOWN_NAME_BUCKETS


async def test_a_real_users_failed_logins_stay_visible(tmp_path: Path) -> None:
    """Failures against an existing account are each audited (the account lock bounds them);
    the window summary names the account and counts every failure from the address."""
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "operator")
        for _ in range(3):
            r = await env.try_login(alice, password="wrong password!!", address=ATTACKER)
            assert r.status_code == 401
        ghost = User("ghost", "operator", None)
        assert (await env.try_login(ghost, totp=None, address=ATTACKER)).status_code == 401
        failed = await _entries(env, "auth.login_failed")
        assert [(e.target, e.details["reason"]) for e in failed] == [
            ("alice", "wrong password")
        ] * 3
        env.clock.advance(minutes=16)  # the window closes; the next login writes its summary
        assert (await env.try_login(alice, address="198.51.100.2")).status_code == 200
        [summary] = await _entries(env, "auth.login_failures")
        assert summary.details["failures"] == 4
        assert summary.details["usernames"] == ["alice", "ghost"]


async def test_lockout_is_audited_once_not_per_refused_attempt(tmp_path: Path) -> None:
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "operator")
        for _ in range(lockout.ACCOUNT_FAILURES):
            await env.try_login(alice, password="wrong password!!", address=ATTACKER)
        leaves = await _leaves(env)
        for _ in range(50):
            assert (await env.try_login(alice, address=ATTACKER)).status_code == 429
        assert await _leaves(env) == leaves
        [lock] = await _entries(env, "auth.locked")
        assert lock.target == "alice" and lock.details["lock_seconds"] == 60


# -- OCPP clients -----------------------------------------------------------------------------


class _Station(ChargePoint):
    """A station client that answers TriggerMessage and keeps CertificateSigned chains."""

    def __init__(self, station_id: str, ws: Any) -> None:
        super().__init__(station_id, ws, 10)
        self.triggered: list[str] = []
        self.chains: list[str] = []

    @on("TriggerMessage")
    async def on_trigger(self, requested_message: str, **_: Any) -> call_result.TriggerMessage:
        self.triggered.append(requested_message)
        return call_result.TriggerMessage(status="Accepted")

    @on("CertificateSigned")
    async def on_signed(self, certificate_chain: str, **_: Any) -> call_result.CertificateSigned:
        self.chains.append(certificate_chain)
        return call_result.CertificateSigned(status="Accepted")


@asynccontextmanager
async def _booted(
    ws: Any,
    station_id: str,
    *,
    model: str = "AC22",
    vendor: str = "ACME",
    serial: str | None = None,
) -> AsyncIterator[_Station]:
    cp = _Station(station_id, ws)
    reader = asyncio.create_task(cp.start())
    try:
        station: dict[str, Any] = {"model": model, "vendor_name": vendor}
        if serial is not None:
            station["serial_number"] = serial
        await cp.call(call.BootNotification(charging_station=station, reason="PowerUp"))
        yield cp
    finally:
        reader.cancel()


async def _leaf_count(csms: Csms) -> int:
    async with csms.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


# -- point 3b: SecurityEventNotification flood -------------------------------------------------


async def test_security_event_flood_is_bounded_and_summarised(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """500 SecurityEventNotifications from one station: every one answered per OCPP (an
    empty response), at most the per-station budget stored and audited, one summary entry
    with the number suppressed, and a critical type beyond the budget still alerts."""
    sid = "CP-FLOOD"
    async with running_csms(tmp_path / "srv", tls_pki, tls=False, allow_profile_1=True) as csms:
        await csms.add_station(sid, PASSWORD, 1)
        before = await _leaf_count(csms)
        async with station_connection(csms.url, sid, PASSWORD) as ws, _booted(ws, sid) as cp:
            after_boot = await _leaf_count(csms)
            for i in range(500):
                answer = await cp.call(
                    call.SecurityEventNotification(
                        type="InvalidMessages", timestamp="2026-12-07T05:00:00Z", tech_info=str(i)
                    )
                )
                assert answer == call_result.SecurityEventNotification()
            await cp.call(
                call.SecurityEventNotification(
                    type="TamperDetectionActivated", timestamp="2026-12-07T05:00:01Z"
                )
            )
        budget = write_budget.SECURITY_EVENT_BUDGET

        async def summaries() -> list[dict[str, Any]]:
            return [
                d for a, d in await csms.audit(sid) if a == "station.security_events_suppressed"
            ]

        for _ in range(500):  # the summary is written when the station disconnects
            if await summaries():
                break
            await asyncio.sleep(0.02)
        [summary] = await summaries()
        assert summary["suppressed"] == 501 - budget
        assert summary["types"] == {"InvalidMessages": 500 - budget, "TamperDetectionActivated": 1}
        trail = await csms.audit(sid)
        assert len([a for a, _ in trail if a == "station.security_event"]) == budget
        async with csms.db.session() as s:
            stored = await s.scalar(
                select(func.count())
                .select_from(SecurityEvent)
                .where(SecurityEvent.station_id == sid)
            )
            assert stored == budget
            open_alerts = await alerts.list_alerts(s, station_id=sid, state="open")
        assert {a.details.get("type") for a in open_alerts} >= {"TamperDetectionActivated"}
        # Boot, connect/disconnect, the budget's events, their alert, the critical alert and
        # the summary: bounded, not 500.
        assert await _leaf_count(csms) - after_boot <= budget + 6
        assert after_boot > before


# -- point 3c: unsolicited SignCertificate -----------------------------------------------------


async def test_unsolicited_sign_certificate_issues_nothing(tmp_path: Path, tls_pki: TlsPki) -> None:
    """50 SignCertificate requests the CSMS never asked for: all Rejected, none issued, at
    most the per-station refusal budget audited and one summary with the count (before: 50
    entries); a renewal the CSMS triggers is signed once, and a second CSR for it is refused."""
    sid = "CP-CSR"
    station = tls_pki.station_cert(sid)
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station(sid, PASSWORD, 3, station.cert)
        ctx = tls_pki.client_context(station)
        async with (
            connect(csms.url + sid, ssl=ctx, subprotocols=SUBPROTOCOLS, open_timeout=5) as ws,
            _booted(ws, sid) as cp,
        ):
            before = await _leaf_count(csms)
            answers = []
            for _ in range(50):
                csr = build_csr(generate_device_key_pair().private_pem, sid, "ACME")
                answers.append(
                    await cp.call(
                        call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate")
                    )
                )
            assert [a.status for a in answers] == ["Rejected"] * 50
            assert await _leaf_count(csms) - before <= 10  # bounded, not 50
            budget = write_budget.CSR_REFUSAL_BUDGET
            trail = await csms.audit(sid)
            assert "station.certificate_issued" not in [a for a, _ in trail]
            refused = [d["reason"] for a, d in trail if a == "station.certificate_refused"]
            assert refused == [station_security.UNSOLICITED] * budget
            # The CSMS asks (TriggerMessage, OCPP A02): one CSR is signed ...
            assert await renew_certificate(csms.db, csms.registry, sid, actor="olga") == "Accepted"
            assert cp.triggered == ["SignChargingStationCertificate"]
            csr = build_csr(generate_device_key_pair().private_pem, sid, "ACME")
            sign = call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate")
            assert (await cp.call(sign)).status == "Accepted"
            await csms.wait(lambda: cp.chains, "the CertificateSigned chain")
            # ... and only one: a second CSR for the same request is refused.
            assert (await cp.call(sign)).status == "Rejected"
        issued = [a for a, _ in await csms.audit(sid) if a == "station.certificate_issued"]
        assert len(issued) == 1 and len(cp.chains) == 1

        async def summaries() -> list[dict[str, Any]]:
            trail = await csms.audit(sid)
            return [d for a, d in trail if a == "station.certificates_refused_suppressed"]

        # The summary is written when the station disconnects: the rest of the 50 and the
        # second CSR, all refused for the same reason.
        for _ in range(500):
            if await summaries():
                break
            await asyncio.sleep(0.02)
        [summary] = await summaries()
        assert summary["suppressed"] == 51 - budget
        assert summary["types"] == {station_security.UNSOLICITED: 51 - budget}
        refused = [a for a, _ in await csms.audit(sid) if a == "station.certificate_refused"]
        assert len(refused) == budget


# -- point 8: BootNotification identity --------------------------------------------------------


async def _register(csms: Csms, sid: str, model: str, vendor: str, serial: str) -> None:
    await csms.add_station(sid, PASSWORD, 1)
    async with csms.db.session() as s:
        row = await s.get(Station, sid)
        assert row is not None
        row.model, row.vendor, row.serial_number = model, vendor, serial


async def _identity(csms: Csms, sid: str) -> tuple[str | None, str | None, str | None]:
    async with csms.db.session() as s:
        row = await s.get(Station, sid)
        assert row is not None
        return row.model, row.vendor, row.serial_number


async def _identity_alerts(csms: Csms, sid: str) -> list[Any]:
    async with csms.db.session() as s:
        return [
            a
            for a in await alerts.list_alerts(s, station_id=sid, state="active")
            if a.kind == "station_identity"
        ]


async def test_boot_with_another_model_changes_no_registry_field(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    sid = "CP-ID-1"
    async with running_csms(tmp_path / "srv", tls_pki, tls=False, allow_profile_1=True) as csms:
        await _register(csms, sid, "AC22", "ACME", "SN-0001")
        async with (
            station_connection(csms.url, sid, PASSWORD) as ws,
            _booted(ws, sid, model="DC150", vendor="EvilCorp", serial="SN-0001"),
        ):
            pass
        assert await _identity(csms, sid) == ("AC22", "ACME", "SN-0001")
        raised = await _identity_alerts(csms, sid)
        assert sorted(a.details["field"] for a in raised) == ["model", "vendor"]
        assert {a.details["reported"] for a in raised} == {"DC150", "EvilCorp"}
        actions = [a for a, _ in await csms.audit(sid)]
        assert actions.count("station.identity_mismatch") == 2
        # Campaign targeting by model still sees the registered model.
        async with csms.db.session() as s:
            by_model = await fleet.list_stations(s, fleet.StationFilter(model="AC22"))
            assert sid in [v.id for v in by_model]
            assert not await fleet.list_stations(s, fleet.StationFilter(model="DC150"))
        # The next honest boot does not clear the alert: an operator does.
        async with station_connection(csms.url, sid, PASSWORD) as ws, _booted(ws, sid):
            pass
        assert len(await _identity_alerts(csms, sid)) == 2


async def test_boot_with_another_stations_serial_is_refused_and_alerted(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    victim, liar = "CP-ID-V", "CP-ID-L"
    async with running_csms(tmp_path / "srv", tls_pki, tls=False, allow_profile_1=True) as csms:
        await _register(csms, victim, "AC22", "ACME", "SN-VICTIM")
        await csms.add_station(liar, PASSWORD, 1)  # no registry identity yet
        async with (
            station_connection(csms.url, liar, PASSWORD) as ws,
            _booted(ws, liar, serial="SN-VICTIM"),
        ):
            pass
        model, vendor, serial = await _identity(csms, liar)
        assert serial is None  # not stored
        assert (model, vendor) == ("AC22", "ACME")  # a first report fills empty fields
        [alert] = await _identity_alerts(csms, liar)
        assert alert.details["field"] == "serial_number"
        assert alert.details["conflict"] == victim
        assert await _identity(csms, victim) == ("AC22", "ACME", "SN-VICTIM")


# -- point 3d: BootNotification flood ----------------------------------------------------------


async def test_boot_notification_flood_is_bounded_and_summarised(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """200 BootNotifications on one connection: every one Accepted (OCPP B01), at most the
    per-station boot budget stored (BootEvent) and audited (``station.boot``), and one
    ``station.boots_suppressed`` entry with the number suppressed (before: 201 of each)."""
    sid = "CP-BOOTS"
    async with running_csms(tmp_path / "srv", tls_pki, tls=False, allow_profile_1=True) as csms:
        await csms.add_station(sid, PASSWORD, 1)
        before = await _leaf_count(csms)
        async with station_connection(csms.url, sid, PASSWORD) as ws, _booted(ws, sid) as cp:
            station = {"model": "AC22", "vendor_name": "ACME"}
            for _ in range(200):
                answer = await cp.call(
                    call.BootNotification(charging_station=station, reason="PowerUp")
                )
                assert answer.status == "Accepted"
            # Still booted: other calls are answered.
            assert (await cp.call(call.Heartbeat())).current_time

        async def summaries() -> list[dict[str, Any]]:
            return [d for a, d in await csms.audit(sid) if a == "station.boots_suppressed"]

        for _ in range(500):  # the summary is written when the station disconnects
            if await summaries():
                break
            await asyncio.sleep(0.02)
        # Connect, the budget's boots, disconnect, the summary: bounded, not 201.
        assert await _leaf_count(csms) - before <= 15
        boots = [a for a, _ in await csms.audit(sid) if a == "station.boot"]
        budget = write_budget.BOOT_BUDGET
        assert len(boots) == budget
        async with csms.db.session() as s:
            stored = await s.scalar(
                select(func.count()).select_from(BootEvent).where(BootEvent.station_id == sid)
            )
        assert stored == budget
        [summary] = await summaries()
        assert summary["suppressed"] == 201 - budget
        assert summary["types"] == {"PowerUp": 201 - budget}
        assert summary["budget"] == budget


# -- point 8 (bounded): identity claims that change every boot ------------------------------


async def test_boots_with_ever_new_models_raise_one_alert_per_field(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """100 BootNotifications claiming model X1, X2, ... (and vendors V1, V2, ...): one
    unresolved alert per field that counts them and keeps the last value and at most 10
    distinct ones, and one ``station.identity_mismatch`` entry per field (before: 100 each)."""
    sid = "CP-ID-MANY"
    async with running_csms(tmp_path / "srv", tls_pki, tls=False, allow_profile_1=True) as csms:
        await _register(csms, sid, "AC22", "ACME", "SN-MANY")
        async with station_connection(csms.url, sid, PASSWORD) as ws, _booted(ws, sid) as cp:
            for i in range(100):
                station = {"model": f"X{i}", "vendor_name": f"V{i}", "serial_number": "SN-MANY"}
                answer = await cp.call(
                    call.BootNotification(charging_station=station, reason="PowerUp")
                )
                assert answer.status == "Accepted"
        # Beyond the listener's boot budget too: 100 more reports straight to the service
        # (as many windows would bring them).
        for i in range(100, 200):
            async with csms.db.session() as s:
                await station_reports.record_boot(
                    s,
                    sid,
                    reason="PowerUp",
                    firmware_version=None,
                    model=f"X{i}",
                    vendor=f"V{i}",
                    serial_number="SN-MANY",
                    now=dt.datetime.now(dt.UTC),
                )
        assert await _identity(csms, sid) == ("AC22", "ACME", "SN-MANY")
        raised = await _identity_alerts(csms, sid)
        assert sorted(a.details["field"] for a in raised) == ["model", "vendor"]
        for a in raised:
            assert a.count >= 100
            assert len(a.details["values"]) <= 10
            prefix = "X" if a.details["field"] == "model" else "V"
            assert a.details["reported"] == f"{prefix}199"
        actions = [a for a, _ in await csms.audit(sid)]
        assert actions.count("station.identity_mismatch") == 2
