"""Certificate management over real OCPP 2.0.1 websockets: a real server and a real agent.

OCPP M05 (InstallCertificate), M03 (GetInstalledCertificateIds) and M04 (DeleteCertificate)
for ManufacturerRootCertificates, driven through the REST API and the ``station`` CLI.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from chargeward.crypto.keys import load_signer
from chargeward.crypto.pki import certificate_fingerprint, certificate_hash_data, certificate_pem
from chargeward.crypto.root_rotation import endorsed_root_bundle, issue_link_certificate
from tests.support.fleet import (
    TEST_PASSPHRASE,
    Pki,
    Server,
    assert_no_crash,
    cli,
    running_server,
    wait_for,
)

STATION = "CP-0001"
CERTIFICATES = f"/api/v1/stations/{STATION}/certificates"
TRUST_EVENT = "ReconfigurationOfSecurityParameters"


def trusting(tmp_path: Path, pki: Pki, *extra: x509.Certificate) -> Pki:
    """``pki`` whose root file (the server's --manufacturer-root) also holds ``extra``."""
    bundle = tmp_path / "server-trust.pem"
    bundle.write_text(pki.root_pem.read_text() + "".join(certificate_pem(c) for c in extra))
    return dataclasses.replace(pki, root_pem=bundle)


def listed(srv: Server) -> list[dict[str, Any]]:
    answer = srv.api("GET", CERTIFICATES)
    assert answer["station_response"] == "Accepted"
    return list(answer["certificates"])


def entry(cert: x509.Certificate) -> dict[str, Any]:
    return {"certificate_type": "ManufacturerRootCertificate", **vars(certificate_hash_data(cert))}


def delete(srv: Server, cert: x509.Certificate) -> dict[str, Any]:
    return dict(srv.api("DELETE", CERTIFICATES, params=vars(certificate_hash_data(cert))))


def update(srv: Server, release_id: str) -> dict[str, Any]:
    return dict(
        srv.api(
            "POST",
            f"/api/v1/stations/{STATION}/firmware-updates",
            json={"release_id": release_id, "retry_interval": 1},
        )
    )


@pytest.mark.slow  # 38 s beside the suite's other tests on 2 cores
def test_new_root_installed_over_ocpp_then_releases_under_it_install(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    new = Pki.create(tmp_path / "new-pki", name="ACME 2027")
    endorsed = tmp_path / "acme-2027-endorsed.pem"  # what 'chargeward pki link-root' writes
    old_key = load_signer(f"file:{pki.dir / 'root.key'}", lambda: TEST_PASSPHRASE.encode())
    link = issue_link_certificate(old_key, pki.root_cert, new.root_cert)
    endorsed.write_text(endorsed_root_bundle(new.root_cert, [link]))
    release_bundle = new.bundle(tmp_path / "acme-2027-1.1.0.cwb", "1.1.0", 2)
    with running_server(tmp_path, trusting(tmp_path, pki, new.root_cert)) as srv:
        agent, state = srv.start_agent(tmp_path, pki, STATION, factory_bundle)
        srv.wait_connected(STATION)
        release = srv.upload(release_bundle)
        assert listed(srv) == [entry(pki.root_cert)]

        # The charger does not know the new root yet: OCPP L01 InvalidCertificate.
        assert update(srv, release["id"])["station_response"] == "InvalidCertificate"

        out = cli(
            "station", "install-root", STATION, "--cert", str(endorsed),
            "--data-dir", str(srv.data_dir),
        ).stdout  # fmt: skip
        assert "accepted InstallCertificate" in out
        assert listed(srv) == [entry(pki.root_cert), entry(new.root_cert)]
        again = srv.api(
            "POST",
            CERTIFICATES,
            json={
                "certificate_type": "ManufacturerRootCertificate",
                "certificate_pem": new.root_pem.read_text(),
            },
        )
        assert again["station_response"] == "Accepted"  # already installed: no second copy
        assert len(listed(srv)) == 2
        wait_for(
            lambda: TRUST_EVENT in [e["type"] for e in srv.station(STATION)["security_events"]],
            what="the trust-store security event",
        )

        # The factory firmware the charger boots chains to the old root: it must stay.
        in_use = delete(srv, pki.root_cert)
        assert (in_use["station_response"], in_use["reason_code"]) == ("Failed", "InUse")

        r = update(srv, release["id"])
        assert r["station_response"] == "Accepted"
        detail = wait_for(
            lambda: (d := srv.station(STATION))["updates"][-1]["outcome"] != "pending" and d,
            60,
            "the update to finish",
        )
        assert detail["updates"][-1]["outcome"] == "succeeded"
        assert detail["firmware_version"] == "1.1.0"
        srv.wait_connected(STATION)

        # Now the old root may go; the last one may not.
        assert delete(srv, pki.root_cert)["station_response"] == "Accepted"
        assert listed(srv) == [entry(new.root_cert)]
        last = delete(srv, new.root_cert)
        assert (last["station_response"], last["reason_code"]) == ("Failed", "LastRoot")
        roots_pem = (state / "secure" / "roots.pem").read_bytes()
        assert x509.load_pem_x509_certificates(roots_pem) == [new.root_cert]

        trail = srv.api("GET", "/api/v1/audit", params={"target": STATION})
        installs = [e for e in trail if e["action"].startswith("certificate.install")]
        assert [e["action"] for e in installs][:2] == [
            "certificate.install_requested",
            "certificate.install_response",
        ]
        assert installs[0]["transaction_id"] == installs[1]["transaction_id"]
        assert installs[0]["details"]["sha256"] == certificate_fingerprint(new.root_cert)
        assert installs[1]["details"]["status"] == "Accepted"
        assert installs[1]["actor"] == f"station:{STATION}"
        agent_log = agent.stop()
    assert_no_crash(srv.proc.output())
    assert_no_crash(agent_log)


@pytest.mark.slow  # 36 s beside the suite's other tests on 2 cores
def test_station_refuses_a_non_ca_certificate_and_deleting_its_last_root(
    tmp_path: Path, pki: Pki, other_pki: Pki, factory_bundle: Path
) -> None:
    # Even a certificate the server was told to trust is checked by the charger itself.
    with running_server(tmp_path, trusting(tmp_path, pki, pki.signing_cert)) as srv:
        agent, state = srv.start_agent(tmp_path, pki, STATION, factory_bundle)
        srv.wait_connected(STATION)
        roots_before = (state / "secure" / "roots.pem").read_bytes()

        leaf = srv.api(
            "POST",
            CERTIFICATES,
            json={
                "certificate_type": "ManufacturerRootCertificate",
                "certificate_pem": certificate_pem(pki.signing_cert),
            },
        )
        assert (leaf["station_response"], leaf["reason_code"]) == ("Rejected", "InvalidCertificate")
        assert "not a CA certificate" in leaf["additional_info"]

        other_type = srv.api(
            "POST",
            CERTIFICATES,
            json={
                "certificate_type": "V2GRootCertificate",  # ISO 15118 is not supported
                "certificate_pem": pki.root_pem.read_text(),
            },
        )
        assert (other_type["station_response"], other_type["reason_code"]) == (
            "Rejected",
            "UnsupportedCertType",
        )

        # A root the server does not trust never leaves the server.
        with srv.http as c:
            refused = c.post(
                CERTIFICATES,
                json={
                    "certificate_type": "ManufacturerRootCertificate",
                    "certificate_pem": other_pki.root_pem.read_text(),
                },
            )
        assert refused.status_code == 422
        assert "not a Manufacturer Root CA this server trusts" in refused.json()["error"]["message"]

        last = delete(srv, pki.root_cert)
        assert (last["station_response"], last["reason_code"]) == ("Failed", "LastRoot")
        assert delete(srv, other_pki.root_cert)["station_response"] == "NotFound"
        refused_cli = cli(
            "station", "delete-root", STATION, "--cert", str(pki.root_pem),
            "--data-dir", str(srv.data_dir), check=False,
        )  # fmt: skip
        assert refused_cli.returncode == 1
        assert refused_cli.stderr.startswith(f"error: station {STATION} answered Failed")
        assert (state / "secure" / "roots.pem").read_bytes() == roots_before
        assert listed(srv) == [entry(pki.root_cert)]

        only_types = srv.api("GET", CERTIFICATES, params={"certificate_type": "V2GRootCertificate"})
        assert only_types == {
            "station_id": STATION,
            "station_response": "NotFound",
            "certificates": [],
        }
        shown = cli("station", "certificates", STATION, "--data-dir", str(srv.data_dir)).stdout
        assert (
            "ManufacturerRootCertificate" in shown and f"{pki.root_cert.serial_number:x}" in shown
        )

        with httpx.Client(base_url=srv.api_url, timeout=10) as anonymous:
            assert anonymous.get(CERTIFICATES).status_code == 401
        with srv.http as c:
            assert c.get("/api/v1/stations/CP-9999/certificates").status_code == 404
        agent_log = agent.stop()
    assert_no_crash(srv.proc.output())
    assert_no_crash(agent_log)
