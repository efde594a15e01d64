"""OCPP 1.6J end to end (issue 30): a real ``chargeward server`` process serving wss:// on
loopback and the real agent as a 1.6J station, security profile 2 (TLS + Basic auth) unless
said otherwise.

- a whitepaper station takes a signed release through a campaign: its
  SignedFirmwareStatusNotifications arrive in order, the reboot's BootNotification (no reason
  in 1.6) reports the new version, and the run succeeds after the soak;
- a tampered image is refused (InvalidSignature, an InvalidFirmwareSignature security event)
  and a release signed under another manufacturer's PKI is refused before download
  (InvalidCertificate, InvalidFirmwareSigningCertificate); the station keeps its version;
- a legacy station (no whitepaper) is refused a plain update until an operator marks it, with
  the reason in the API; once marked it installs through UpdateFirmware and reboots into it;
- certificate renewal (ExtendedTriggerMessage -> SignCertificate -> CertificateSigned) on a
  profile-3 station, which reconnects with its new certificate, and GetLog.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chargeward.crypto import load_certificate
from chargeward.ocpp.csms16 import SIGNED_UNSUPPORTED
from tests.support.agent_harness import L01_HAPPY
from tests.support.campaigns import api, campaign_doc, runs, until
from tests.support.fleet import Pki, Server
from tests.support.ocpp16_e2e import (
    connected,
    server16,
    station,
    station16,
    statuses,
    update_done,
    update_of,
)
from tests.support.tls import TlsPki

SID = "CP-16"
# A TLS server process and a 1.6J station each: 6-12 s apiece beside the suite's other tests.
pytestmark = pytest.mark.slow


async def test_signed_update_through_a_campaign_over_profile_2(
    tmp_path: Path, pki: Pki, factory_bundle: Path, tls_pki: TlsPki
) -> None:
    release = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    with server16(tmp_path, pki, tls_pki) as srv:
        release_id = srv.upload(release)["id"]
        async with station16(srv, tmp_path, pki, factory_bundle, tls_pki, SID):
            before = await station(srv, SID)
            assert before["firmware_version"] == "1.0.0"
            assert before["ocpp_version"] == "1.6" and before["security_profile"] == 2
            cid = (
                await api(srv, "POST", "/api/v1/campaigns", json=campaign_doc("16", release_id))
            )["id"]
            await until(lambda: _run_state(srv, cid, "succeeded"), "the run to succeed", timeout=25)
            run = (await runs(srv, cid))[SID]
            detail = await station(srv, SID)
            rid = run["request_id"]
            assert statuses(detail, rid) == L01_HAPPY
            assert update_of(detail, rid)["outcome"] == "succeeded"
            assert detail["firmware_version"] == "1.1.0"
            boot = detail["boots"][-1]
            assert boot["firmware_version"] == "1.1.0"
            assert boot["reason"] == "Unknown"  # a 1.6 BootNotification says no reason
            assert [e["type"] for e in detail["security_events"]] == ["FirmwareUpdated"]
            assert [t[1] for t in run["timeline"]][-2:] == ["soaking", "succeeded"]
            # The boot counts as the update's: its transaction id follows it into the audit.
            tid = update_of(detail, rid)["transaction_id"]
            trail = await api(srv, "GET", "/api/v1/audit", params={"transaction_id": tid})
            assert "station.boot" in [e["action"] for e in trail]
            shown = await api(srv, "GET", "/api/v1/audit", params={"target": SID})
            support = [
                e["details"] for e in shown if e["action"] == "station.signed_update_support"
            ]
            assert [d["supported"] for d in support] == [True]


async def test_tampered_image_is_refused_with_invalid_signature(
    tmp_path: Path, pki: Pki, factory_bundle: Path, tls_pki: TlsPki
) -> None:
    release = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    with server16(tmp_path, pki, tls_pki) as srv:
        view = srv.upload(release)
        blob = srv.data_dir / "blobs" / "sha256" / view["images"][0]["sha256"]
        tampered = bytearray(blob.read_bytes())
        tampered[len(tampered) // 2] ^= 0x01  # one bit of the payload, same length
        blob.chmod(0o644)
        blob.write_bytes(bytes(tampered))
        async with station16(srv, tmp_path, pki, factory_bundle, tls_pki, SID) as (_, state):
            rid, detail = await _update(srv, view["id"], "Accepted")
            assert statuses(detail, rid) == ["Downloading", "Downloaded", "InvalidSignature"]
            assert update_of(detail, rid)["outcome"] == "failed"
            events = await until(
                lambda: _events(srv, "InvalidFirmwareSignature"), "the security event", 10
            )
            assert len(events) == 1 and events[0]["station_id"] == SID
            assert (await station(srv, SID))["firmware_version"] == "1.0.0"
            assert state.boot_control().active == "a" and not state.boot_control().trial


async def test_release_of_another_manufacturer_is_refused_before_download(
    tmp_path: Path, pki: Pki, other_pki: Pki, factory_bundle: Path, tls_pki: TlsPki
) -> None:
    both = tmp_path / "both-roots.pem"  # the server accepts releases the charger must refuse
    both.write_bytes(pki.root_pem.read_bytes() + other_pki.root_pem.read_bytes())
    foreign = other_pki.bundle(tmp_path / "mallory-9.9.9.cwb", "9.9.9", 99)
    with server16(tmp_path, pki, tls_pki, root_pem=both) as srv:
        release_id = srv.upload(foreign)["id"]
        async with station16(srv, tmp_path, pki, factory_bundle, tls_pki, SID) as (_, state):
            rid, detail = await _update(srv, release_id, "InvalidCertificate")
            assert "Downloading" not in statuses(detail, rid)
            assert update_of(detail, rid)["outcome"] == "failed"
            events = await until(
                lambda: _events(srv, "InvalidFirmwareSigningCertificate"), "the event", 10
            )
            assert len(events) == 1 and "not issued by an installed root" in events[0]["tech_info"]
            assert (await station(srv, SID))["firmware_version"] == "1.0.0"
            assert state.boot_control().active == "a" and state.rollback_floor() == 1


async def test_legacy_station_updates_only_once_marked(
    tmp_path: Path, pki: Pki, factory_bundle: Path, tls_pki: TlsPki
) -> None:
    release = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    with server16(tmp_path, pki, tls_pki) as srv:
        release_id = srv.upload(release)["id"]
        async with station16(srv, tmp_path, pki, factory_bundle, tls_pki, SID, legacy=True) as (
            _,
            state,
        ):
            # Not marked: SignedUpdateFirmware is refused as not supported; no plain one.
            cid = (
                await api(srv, "POST", "/api/v1/campaigns", json=campaign_doc("16", release_id))
            )["id"]
            await until(lambda: _run_state(srv, cid, "failed"), "the run to fail", timeout=20)
            run = (await runs(srv, cid))[SID]
            assert run["reason"] == f"UpdateFirmware {SIGNED_UNSUPPORTED}"
            detail = await station(srv, SID)
            assert {u["response_status"] for u in detail["updates"]} == {SIGNED_UNSUPPORTED}
            assert detail["signed_update_support"] is False
            assert detail["firmware_version"] == "1.0.0"
            shown = await api(srv, "GET", "/api/v1/audit", params={"target": SID})
            (why,) = [e["details"] for e in shown if e["action"] == "station.signed_update_support"]
            assert why["supported"] is False
            assert "mark it legacy (PATCH /api/v1/stations/{id}" in why["evidence"]
            await api(srv, "POST", f"/api/v1/campaigns/{cid}/abort")

            # Marked by an operator: plain UpdateFirmware, the 1.6 statuses, the new version.
            marked = await api(
                srv, "PATCH", f"/api/v1/stations/{SID}", json={"legacy_firmware_update": True}
            )
            assert marked["legacy_firmware_update"] is True
            rid, detail = await _update(srv, release_id, "Accepted")
            assert statuses(detail, rid) == ["Downloading", "Downloaded", "Installing", "Installed"]
            assert update_of(detail, rid)["outcome"] == "succeeded"
            assert detail["firmware_version"] == "1.1.0"
            assert detail["boots"][-1]["firmware_version"] == "1.1.0"
            assert detail["security_events"] == []  # plain 1.6 has no SecurityEventNotification
            assert state.boot_control().active == "b"


async def test_certificate_renewal_and_get_log_on_a_profile_3_station(
    tmp_path: Path, pki: Pki, factory_bundle: Path, tls_pki: TlsPki
) -> None:
    path = f"/api/v1/stations/{SID}"
    with server16(tmp_path, pki, tls_pki) as srv:
        async with station16(srv, tmp_path, pki, factory_bundle, tls_pki, SID, profile=3) as (
            _,
            state,
        ):
            first = load_certificate(state.device_certificate_path.read_bytes())
            before = await api(srv, "GET", f"{path}/security")
            assert before["security_profile"] == 3
            assert before["certificate_serial"] == f"{first.serial_number:x}"

            # A02 on 1.6: ExtendedTriggerMessage -> SignCertificate -> CertificateSigned.
            renewal = await api(srv, "POST", f"{path}/certificate-renewal")
            assert renewal["station_response"] == "Accepted"
            after = await until(lambda: _renewed(srv, first.serial_number), "the renewal", 15)
            new = load_certificate(state.device_certificate_path.read_bytes())
            assert after["certificate_serial"] == f"{new.serial_number:x}"
            assert new.public_key() != first.public_key()  # a new key, made on the charger
            assert state.credential_store().load().pending_device_key_pem is None
            # Profile 3 admits only the registered (now the new) certificate: connecting
            # again after the delivery shows the station uses it.
            actions = await until(lambda: _reconnected(srv), "a connection with it", 15)
            renewed = actions[actions.index("station.certificate_renewal_requested") :]
            assert [a for a in renewed if a.startswith("station.certificate_")] == [
                "station.certificate_renewal_requested",
                "station.certificate_issued",
                "station.certificate_replaced",
                "station.certificate_delivered",
            ]
            await until(lambda: connected(srv, SID), "the station to boot again", 15)

            # GetLog (N01 of the whitepaper): the security log, uploaded to its one-time URL.
            asked = await api(srv, "POST", f"{path}/logs", json={"log_type": "SecurityLog"})
            assert asked["station_response"] == "Accepted"
            done = await until(
                lambda: _log_uploaded(srv, int(asked["request_id"])), "the upload", 15
            )
            assert done["statuses"] == ["Uploading", "Uploaded"]
            assert done["filename"].startswith(f"security-{SID}-")
            uploaded = await asyncio.to_thread(_log_content, srv, int(asked["request_id"]))
            assert len(uploaded) == done["length"]
            # The renewal's security event is in the charger's log, as it notified it.
            assert b"ReconfigurationOfSecurityParameters" in uploaded


async def _renewed(srv: Server, old_serial: int) -> dict[str, Any] | None:
    view = await api(srv, "GET", f"/api/v1/stations/{SID}/security")
    current = view["certificate_serial"]
    if current == f"{old_serial:x}" or view["pending_certificate_serial"]:
        return None
    return dict(view)


async def _reconnected(srv: Server) -> list[str] | None:
    trail = await api(srv, "GET", "/api/v1/audit", params={"target": SID})
    actions = [str(e["action"]) for e in trail]
    delivered = (
        actions.index("station.certificate_delivered")
        if "station.certificate_delivered" in actions
        else None
    )
    if delivered is None or "station.connect" not in actions[delivered:]:
        return None
    return actions


def _log_content(srv: Server, request_id: int) -> bytes:
    with srv.http as c:
        r = c.get(f"/api/v1/stations/{SID}/logs/{request_id}")
    r.raise_for_status()
    return r.content


async def _log_uploaded(srv: Server, request_id: int) -> dict[str, Any] | None:
    found = await api(srv, "GET", f"/api/v1/stations/{SID}/logs")
    view = next(v for v in found if v["request_id"] == request_id)
    return dict(view) if view["last_status"] == "Uploaded" and view["sha256"] else None


async def _update(srv: Server, release_id: str, answer: str) -> tuple[int, dict[str, Any]]:
    """POST a firmware update of ``release_id`` to SID, which answers ``answer``; its request
    id and the station's detail once the update is no longer pending."""
    r = await api(
        srv,
        "POST",
        f"/api/v1/stations/{SID}/firmware-updates",
        json={"release_id": release_id, "retry_interval": 1},
    )
    assert r["station_response"] == answer, r
    rid = int(r["request_id"])
    detail = await until(lambda: update_done(srv, SID, rid), "the update to end", timeout=20)
    return rid, detail


async def _events(srv: Server, kind: str) -> list[dict[str, Any]]:
    found = await api(srv, "GET", "/api/v1/security-events", params={"type": kind})
    return list(found)


async def _run_state(srv: Server, cid: int, state: str) -> bool:
    return bool((await runs(srv, cid))[SID]["state"] == state)
