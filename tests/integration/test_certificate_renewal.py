"""Station certificate renewal (OCPP A02) end to end: the real agent over mutual TLS asks
for, receives and installs a new certificate, and connects with it; a CSR naming another
station is refused, audited, and nothing is issued."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import ChargePoint, call
from websockets.asyncio.client import connect

from chargeward.crypto.pki import load_certificate
from chargeward.crypto.sealing import generate_device_key_pair
from chargeward.crypto.tls import build_csr
from chargeward.server.stations.station_security import renew_expiring_certificates, security_view
from tests.support.fleet import Pki
from tests.support.tls import (
    SUBPROTOCOLS,
    TlsPki,
    provision_charger,
    running_agent,
    running_csms,
)

PASSWORD = "renewal-test-password-0123"


async def test_renewal_before_expiry_end_to_end(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    tls_pki = TlsPki.create(tmp_path / "tls")
    state = provision_charger(
        tmp_path, pki, factory_bundle, tls_pki, "CP-MTLS", PASSWORD, certificate=True
    )
    first = load_certificate(state.device_certificate_path.read_bytes())
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station("CP-MTLS", PASSWORD, 3, first)
        async with running_agent(state, csms.url):
            await csms.wait(lambda: csms.registry.get("CP-MTLS"), "the station to connect")
            assert csms.listener.connection_serials["CP-MTLS"] == f"{first.serial_number:x}"
            # Not due yet (20 days left, renewal 10 days ahead): nothing happens.
            soon = dt.timedelta(days=10)
            assert await renew_expiring_certificates(csms.db, csms.registry, within=soon) == []
            # Due: TriggerMessage -> SignCertificate -> CertificateSigned -> reconnect.
            due = dt.timedelta(days=30)
            assert await renew_expiring_certificates(csms.db, csms.registry, within=due) == [
                "CP-MTLS"
            ]
            await csms.wait(
                lambda: csms.listener.connection_serials["CP-MTLS"] != f"{first.serial_number:x}",
                "the station to connect with its new certificate",
            )
        new = load_certificate(state.device_certificate_path.read_bytes())
        assert csms.listener.connection_serials["CP-MTLS"] == f"{new.serial_number:x}"
        assert new.public_key() != first.public_key()  # a new key, made on the charger
        assert new.not_valid_after_utc > first.not_valid_after_utc
        creds = state.credential_store().load()
        assert creds.pending_device_key_pem is None
        async with csms.db.session() as s:
            view = await security_view(s, "CP-MTLS")
        assert view.certificate_serial == f"{new.serial_number:x}"
        assert view.certificate_expires_at == new.not_valid_after_utc
        trail = [a for a, _ in await csms.audit("CP-MTLS")]
        for action in (
            "station.certificate_renewal_requested",
            "station.certificate_issued",
            "station.certificate_delivered",
        ):
            assert action in trail


async def _sign_request(url: str, ssl_context: Any, csr: str) -> Any:
    async with connect(url, ssl=ssl_context, subprotocols=SUBPROTOCOLS, open_timeout=5) as ws:
        cp = ChargePoint("CP-MTLS", ws, 5)
        reader = __import__("asyncio").create_task(cp.start())
        try:
            await cp.call(
                call.BootNotification(
                    charging_station={"model": "AC22", "vendor_name": "ACME"}, reason="PowerUp"
                )
            )
            return await cp.call(
                call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate")
            )
        finally:
            reader.cancel()


@pytest.mark.parametrize("cn", ["CP-OTHER", ""])
async def test_csr_for_another_identity_is_rejected(tmp_path: Path, cn: str) -> None:
    tls_pki = TlsPki.create(tmp_path / "tls")
    station = tls_pki.station_cert("CP-MTLS")
    pair = generate_device_key_pair()
    csr = build_csr(pair.private_pem, cn or "CP-MTLS", "ACME")
    if not cn:  # not a CSR at all
        csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station("CP-MTLS", PASSWORD, 3, station.cert)
        answer = await _sign_request(csms.url + "CP-MTLS", tls_pki.client_context(station), csr)
        assert answer.status == "Rejected"
        trail = await csms.audit("CP-MTLS")
        refused = [d["reason"] for a, d in trail if a == "station.certificate_refused"]
        expected = (
            "CSR CN 'CP-OTHER' is not the station identity 'CP-MTLS'"
            if cn
            else "not a PEM PKCS#10 certificate signing request"
        )
        assert refused == [expected]
        assert answer.status_info["additional_info"] == expected
        assert "station.certificate_issued" not in [a for a, _ in trail]
