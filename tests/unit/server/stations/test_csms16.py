"""OCPP 1.6J stations on the CSMS's own listener and URL (issue 30, ADR 0039): an
``ocpp.v16.ChargePoint`` (strict schema validation) on loopback, the real listener, sink and
API; each 1.6 action goes through the 2.0.1 path's services."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chargeward import audit
from chargeward.ocpp.csms import CsmsChargePoint
from chargeward.ocpp.csms16 import SIGNED_UNSUPPORTED, Csms16ChargePoint
from chargeward.server.cluster.calls import COMMANDS
from chargeward.server.fleet import station_registry
from chargeward.server.http.api_fleet import StationPatch
from chargeward.server.stations import station_security
from chargeward.server.stations.csms import CsmsListener
from chargeward.server.store import tables
from tests.support.api_app import Api, running_api
from tests.support.fleet import Pki
from tests.support.stored_releases import stored_release
from tests.support.tls import TlsPki

pytestmark = pytest.mark.timeout(10)
NOW = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)
PASSWORD = "Station-Password-0123456789"
SID = "CP-16-1"
SIGNED_L01 = ["Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"]


class Station16(ChargePoint):  # type: ignore[misc]
    """A 1.6J charger with the Security Whitepaper (or without: ``whitepaper=False``)."""

    def __init__(self, ws: Any, *, whitepaper: bool = True, version: str = "1.0.0") -> None:
        super().__init__(SID, ws, response_timeout=5)
        self.whitepaper, self.version = whitepaper, version
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.on_update: Callable[[int | None], Any] | None = None  # what it reports then
        self.config_answer = "Accepted"

    @on("SignedUpdateFirmware")
    def on_signed_update(self, request_id: int, firmware: dict[str, Any], **kw: Any) -> Any:
        if not self.whitepaper:
            from ocpp.exceptions import NotImplementedError as NotImplemented_

            raise NotImplemented_(description="no whitepaper here")
        self.received.append(("SignedUpdateFirmware", {"request_id": request_id, **firmware}))
        return call_result.SignedUpdateFirmware(status="Accepted")

    @after("SignedUpdateFirmware")
    async def after_signed_update(self, request_id: int, **_: Any) -> None:
        if self.whitepaper and self.on_update is not None:
            self.spawn(self.on_update(request_id))

    @on("UpdateFirmware")
    def on_plain_update(self, location: str, retrieve_date: str, **_: Any) -> Any:
        self.received.append(("UpdateFirmware", {"location": location}))
        return call_result.UpdateFirmware()

    @after("UpdateFirmware")
    async def after_plain_update(self, **_: Any) -> None:
        if self.on_update is not None:
            self.spawn(self.on_update(None))

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> Any:
        self.received.append(("ChangeConfiguration", {"key": key, "value": value}))
        return call_result.ChangeConfiguration(status=self.config_answer)

    @on("ExtendedTriggerMessage")
    def on_extended_trigger(self, requested_message: str, **_: Any) -> Any:
        self.received.append(("ExtendedTriggerMessage", {"requested": requested_message}))
        return call_result.ExtendedTriggerMessage(status="Accepted")

    @after("ExtendedTriggerMessage")
    async def after_extended_trigger(self, requested_message: str, **_: Any) -> None:
        if requested_message == "SignChargePointCertificate":
            self.spawn(self.send(call.SignCertificate(csr=self.csr)))

    @on("CertificateSigned")
    def on_certificate_signed(self, certificate_chain: str) -> Any:
        self.received.append(("CertificateSigned", {"chain": certificate_chain}))
        return call_result.CertificateSigned(status="Accepted")

    @on("GetLog")
    def on_get_log(self, request_id: int, log_type: str, log: dict[str, Any], **_: Any) -> Any:
        self.received.append(("GetLog", {"request_id": request_id, "log_type": log_type}))
        return call_result.GetLog(status="Accepted", filename="security.log")

    @after("GetLog")
    async def after_get_log(self, request_id: int, **_: Any) -> None:
        self.spawn(self.send(call.LogStatusNotification(status="Uploading", request_id=request_id)))

    csr = ""
    tasks: set[asyncio.Task[Any]]

    def spawn(self, coro: Any) -> None:
        """Report after the answer is out (the station's own messages, as a charger does)."""
        self.tasks = getattr(self, "tasks", set())
        self.tasks.add(asyncio.ensure_future(coro))

    async def send(self, payload: Any) -> Any:
        return await self.call(payload, suppress=False)

    async def boot(self) -> Any:
        return await self.send(
            call.BootNotification(
                charge_point_model="AC22", charge_point_vendor="ACME", firmware_version=self.version
            )
        )


@asynccontextmanager
async def listening(api: Api, **kw: Any) -> AsyncIterator[int]:
    listener = CsmsListener(api.db, api.state.registry, allow_profile_1=True, **kw)
    server = await listener.serve("127.0.0.1", 0)
    try:
        yield next(iter(server.sockets)).getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        await listener.sink.close()


@asynccontextmanager
async def station(
    port: int, *, protocols: tuple[str, ...] = ("ocpp1.6",), password: str = PASSWORD, **kw: Any
) -> AsyncIterator[Station16]:
    auth = base64.b64encode(f"{SID}:{password}".encode()).decode()
    async with connect(
        f"ws://127.0.0.1:{port}/ocpp/{SID}",
        subprotocols=list(protocols),  # type: ignore[arg-type]
        additional_headers={"Authorization": f"Basic {auth}"},
        open_timeout=5,
    ) as ws:
        cp = Station16(ws, **kw)
        reader = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            reader.cancel()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki16"))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, NOW) as api:
        async with api.db.session() as s:
            await station_registry.register_station(
                s, SID, actor="test", password=PASSWORD, now=NOW
            )
            (await s.get(tables.Station, SID)).security_profile = 1  # type: ignore[union-attr]
        yield api


async def _row(api: Api) -> tables.Station:
    async with api.db.session() as s:
        row = await s.get(tables.Station, SID)
        assert row is not None
        return row


async def until(check: Callable[[], Any], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.02)  # the sink commits in batches: wait for the write
    raise AssertionError(f"timed out waiting for {what}")


def test_the_adapter_has_every_command_with_the_same_signature() -> None:
    for name in COMMANDS:
        ours = inspect.signature(getattr(Csms16ChargePoint, name))
        assert ours == inspect.signature(getattr(CsmsChargePoint, name)), name


async def test_subprotocol_selection_and_recorded_protocol(api: Api) -> None:
    async with listening(api) as port:
        async with station(port) as cp:
            assert cp._connection.subprotocol == "ocpp1.6"
            await cp.boot()
        assert (await _row(api)).ocpp_version == "1.6"
        detail = await api.call("GET", f"/api/v1/stations/{SID}")
        assert detail["ocpp_version"] == "1.6"
        assert "cannot verify" in str(StationPatch.model_fields["legacy_firmware_update"])
        async with station(port, protocols=("ocpp1.6", "ocpp2.0.1")) as cp:
            assert cp._connection.subprotocol == "ocpp2.0.1"
        await until(lambda: _is(api, "2.0.1"), "protocol 2.0.1 recorded")
        with pytest.raises(InvalidStatus) as refused:
            async with station(port, protocols=("ocpp1.5",)):
                pass
        assert refused.value.response.status_code == 400


async def _is(api: Api, version: str) -> bool:
    return (await _row(api)).ocpp_version == version


@pytest.mark.parametrize("profile", [1, 2])
async def test_basic_auth_of_a_16_station(api: Api, profile: int, tls_pki: TlsPki) -> None:
    async with api.db.session() as s:
        (await s.get(tables.Station, SID)).security_profile = profile  # type: ignore[union-attr]
    async with listening(api) as port:
        if profile == 1:
            async with station(port) as cp:
                assert (await cp.boot()).status == "Accepted"
        with pytest.raises(InvalidStatus) as refused:
            async with station(port, password="wrong-password-0123456789"):
                pass
        assert refused.value.response.status_code == 401


async def _update(api: Api, pki: Pki, tmp_path: Path) -> dict[str, Any]:
    release = await stored_release(api.db, tmp_path, pki, "1.1.0", 2, NOW)
    return dict(
        await api.call(
            "POST",
            f"/api/v1/stations/{SID}/firmware-updates",
            expect=202,
            json={"release_id": release, "retry_interval": 1},
        )
    )


async def _update_row(api: Api, request_id: int) -> tables.FirmwareUpdate:
    async with api.db.session() as s:
        row = await s.get(tables.FirmwareUpdate, request_id)
        assert row is not None
        return row


async def test_signed_update_end_to_end(api: Api, pki: Pki, tmp_path: Path) -> None:
    async with listening(api) as port:
        async with station(port) as cp:
            await cp.boot()

            async def report(request_id: int | None) -> None:
                for status in SIGNED_L01:
                    await cp.send(
                        call.SignedFirmwareStatusNotification(status=status, request_id=request_id)
                    )
                await cp._connection.close()

            cp.on_update = report
            answer = await _update(api, pki, tmp_path)
            assert answer["station_response"] == "Accepted"
            await until(lambda: _status(api, answer, "InstallRebooting"), "InstallRebooting")
        [(action, sent)] = cp.received
        assert action == "SignedUpdateFirmware" and sent["request_id"] == answer["request_id"]
        assert sent["signature"] and sent["signing_certificate"].startswith("-----BEGIN")
        async with station(port, version="1.1.0") as cp:  # the reboot: the new version
            await cp.boot()
            await cp.send(
                call.SignedFirmwareStatusNotification(
                    status="Installed", request_id=answer["request_id"]
                )
            )
    row = await _update_row(api, answer["request_id"])
    assert row.outcome == "succeeded"
    async with api.db.session() as s:
        entries = await audit.entries(s, transaction_id=row.transaction_id)
    boots = [e for e in entries if e.action == "station.boot"]  # recognised as the update's
    assert [b.details["firmware_version"] for b in boots] == ["1.1.0"]
    assert (await _row(api)).signed_update_support is True


async def _status(api: Api, answer: dict[str, Any], status: str) -> bool:
    return (await _update_row(api, answer["request_id"])).last_status == status


async def test_invalid_signature_and_its_security_event(api: Api, pki: Pki, tmp_path: Path) -> None:
    async with listening(api) as port, station(port) as cp:
        await cp.boot()

        async def report(request_id: int | None) -> None:
            await cp.send(call.SignedFirmwareStatusNotification("Downloaded", request_id))
            await cp.send(call.SignedFirmwareStatusNotification("InvalidSignature", request_id))
            await cp.send(
                call.SecurityEventNotification(
                    type="InvalidFirmwareSignature",
                    timestamp="2026-12-08T09:00:00Z",
                    tech_info=None,
                )
            )

        cp.on_update = report
        answer = await _update(api, pki, tmp_path)
        await until(lambda: _status(api, answer, "InvalidSignature"), "InvalidSignature")
        await until(lambda: _has_event(api), "the security event")
    assert (await _update_row(api, answer["request_id"])).outcome == "failed"


async def _has_event(api: Api) -> bool:
    async with api.db.session() as s:
        found = await s.scalars(
            select(tables.SecurityEvent.type).where(tables.SecurityEvent.station_id == SID)
        )
        return "InvalidFirmwareSignature" in found.all()


async def test_unmarked_station_without_whitepaper_fails_with_the_reason(
    api: Api, pki: Pki, tmp_path: Path
) -> None:
    async with listening(api) as port, station(port, whitepaper=False) as cp:
        await cp.boot()
        answer = await _update(api, pki, tmp_path)
    assert answer["station_response"] == SIGNED_UNSUPPORTED
    assert cp.received == []  # no plain UpdateFirmware
    assert (await _update_row(api, answer["request_id"])).outcome == "failed"
    assert (await _row(api)).signed_update_support is False
    async with api.db.session() as s:
        entries = await audit.entries(s, target=SID)
    [evidence] = [e for e in entries if e.action == "station.signed_update_support"]
    assert "mark it legacy" in evidence.details["evidence"]
    assert "cannot verify the firmware's origin" in evidence.details["evidence"]


async def test_marked_legacy_station_gets_plain_update_firmware(
    api: Api, pki: Pki, tmp_path: Path
) -> None:
    patched = await api.call(
        "PATCH", f"/api/v1/stations/{SID}", json={"legacy_firmware_update": True}
    )
    assert patched["legacy_firmware_update"] is True
    async with listening(api) as port, station(port, whitepaper=False) as cp:
        await cp.boot()

        async def report(_: int | None) -> None:
            for status in ("Downloading", "Downloaded", "Installing", "Installed"):
                await cp.send(call.FirmwareStatusNotification(status=status))

        cp.on_update = report
        answer = await _update(api, pki, tmp_path)
        await until(lambda: _status(api, answer, "Installed"), "Installed")
    assert [a for a, _ in cp.received] == ["UpdateFirmware"]
    assert (await _update_row(api, answer["request_id"])).outcome == "succeeded"
    async with api.db.session() as s:
        found = await s.scalars(
            select(tables.FirmwareStatusEvent.request_id).where(
                tables.FirmwareStatusEvent.station_id == SID
            )
        )
        assert set(found.all()) == {answer["request_id"]}
        entries = await audit.entries(s, target=SID)
    assert any(e.action == "station.registry_update" for e in entries)  # the mark, audited


async def test_marked_station_that_showed_whitepaper_never_gets_plain_update(
    api: Api, pki: Pki, tmp_path: Path
) -> None:
    await api.call("PATCH", f"/api/v1/stations/{SID}", json={"legacy_firmware_update": True})
    async with listening(api) as port:
        async with station(port) as cp:
            await cp.boot()
            await cp.send(
                call.SecurityEventNotification(
                    type="StartupOfTheDevice", timestamp="2026-12-08T09:00:00Z", tech_info=None
                )
            )
            await until(lambda: _support(api), "whitepaper support recorded")
        async with station(port) as cp:  # a new connection: the database remembers
            await cp.boot()
            answer = await _update(api, pki, tmp_path)
    assert answer["station_response"] == "Accepted"
    assert [a for a, _ in cp.received] == ["SignedUpdateFirmware"]


async def _support(api: Api) -> bool:
    return (await _row(api)).signed_update_support is True


@pytest.mark.parametrize("answer", ["Accepted", "Rejected"])
async def test_password_rotation_with_change_configuration(api: Api, answer: str) -> None:
    before = (await _row(api)).password_hash
    async with listening(api) as port, station(port) as cp:
        await cp.boot()
        cp.config_answer = answer
        result = await station_security.rotate_password(
            api.db, api.state.registry, SID, actor="alice"
        )
    assert result.status == answer
    [(action, sent)] = cp.received
    assert action == "ChangeConfiguration" and sent["key"] == "AuthorizationKey"
    row = await _row(api)
    assert (row.password_hash != before) is (answer == "Accepted")
    assert row.pending_password_hash is None


async def test_transactions_drive_active_transactions(api: Api) -> None:
    async with listening(api) as port, station(port) as cp:
        await cp.boot()
        started = await cp.send(
            call.StartTransaction(
                connector_id=1,
                id_tag="04A2B3C4",
                meter_start=0,
                timestamp="2026-12-08T09:00:00Z",
            )
        )
        assert started.id_tag_info["status"] == "Accepted"
        await until(lambda: _active(api, {"1": str(started.transaction_id)}), "started")
        await cp.send(
            call.StopTransaction(
                meter_stop=10,
                timestamp="2026-12-08T09:10:00Z",
                transaction_id=started.transaction_id,
            )
        )
        await until(lambda: _active(api, {}), "stopped")
        # A Charging status alone means a car charges (a start lost, or before this server).
        await cp.send(
            call.StatusNotification(connector_id=2, error_code="NoError", status="Charging")
        )
        await until(lambda: _active(api, {"2": "status:2"}), "charging")
        await cp.send(  # the charge point itself: not a connector
            call.StatusNotification(connector_id=0, error_code="NoError", status="Available")
        )
        await cp.send(
            call.StatusNotification(connector_id=2, error_code="NoError", status="Available")
        )
        await until(lambda: _active(api, {}), "closed by Available")
    assert (await _row(api)).connector_status == {"2/1": "Available"}


async def _active(api: Api, want: dict[str, str]) -> bool:
    return dict((await _row(api)).active_transactions) == want


async def test_certificate_renewal_through_extended_trigger(api: Api, tls_pki: TlsPki) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SID)]))
        .sign(key, hashes.SHA256())
    )
    async with listening(api, charger_ca=tls_pki.charger_ca()) as port, station(port) as cp:
        cp.csr = csr.public_bytes(serialization.Encoding.PEM).decode()
        await cp.boot()
        answer = await station_security.renew_certificate(
            api.db, api.state.registry, SID, actor="alice"
        )
        assert answer == "Accepted"
        for _ in range(200):
            if any(a == "CertificateSigned" for a, _ in cp.received):
                break
            await asyncio.sleep(0.02)
    actions = [a for a, _ in cp.received]
    assert actions == ["ExtendedTriggerMessage", "CertificateSigned"]
    assert cp.received[0][1]["requested"] == "SignChargePointCertificate"


async def test_get_log_and_its_status(api: Api) -> None:
    async with listening(api) as port, station(port) as cp:
        await cp.boot()
        asked = await api.call(
            "POST", f"/api/v1/stations/{SID}/logs", json={"log_type": "SecurityLog"}
        )
        assert asked["station_response"] == "Accepted"

        async def uploading() -> bool:
            logs = await api.call("GET", f"/api/v1/stations/{SID}/logs")
            return any(x.get("last_status") == "Uploading" for x in logs)

        await until(uploading, "LogStatusNotification recorded")
    assert cp.received[0] == (
        "GetLog",
        {"request_id": asked["request_id"], "log_type": "SecurityLog"},
    )
