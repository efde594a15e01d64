"""Attacks on the firmware path, each refused by the agent with the exact OCPP answer.

The server here trusts two manufacturer roots (one of them unknown to the chargers), and its
blob store and database are tampered with directly, as an attacker who owns the server would.
In every case the charger's active slot stays untouched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fleet import Pki, Server, assert_no_crash, cli, running_server, wait_for


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, other_pki: Pki, factory_bundle: Path
) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("attack-fleet")
    both = root / "both-roots.pem"
    both.write_bytes(pki.root_pem.read_bytes() + other_pki.root_pem.read_bytes())
    with running_server(root, Pki(root, None, both, pki.signing_signer, pki.signing_cert)) as srv:
        yield srv, root
        for agent in srv.agents:
            assert_no_crash(agent.stop())
    assert_no_crash(srv.proc.output())


def _attack(
    srv: Server, root: Path, pki: Pki, factory: Path, station: str, bundle: Path, tamper: Any = None
) -> tuple[dict[str, Any], list[str], Path]:
    _, state = srv.start_agent(root, pki, station, factory)
    srv.wait_connected(station)
    release = srv.upload(bundle)
    if tamper:
        tamper(srv, release)
    r = srv.api(
        "POST",
        f"/api/v1/stations/{station}/firmware-updates",
        json={"release_id": release["id"], "retry_interval": 1},
    )
    detail = wait_for(
        lambda: (
            (d := srv.station(station))["updates"]
            and d["updates"][-1]["outcome"] != "pending"
            and d
        ),
        30,
        "refusal",
    )
    statuses = [
        e["status"] for e in detail["firmware_statuses"] if e["request_id"] == r["request_id"]
    ]
    detail["response"] = r["station_response"]
    return detail, statuses, state


def _slot_untouched(state: Path) -> None:
    out = cli("agent", "status", "--state-dir", str(state)).stdout
    assert "active slot a," in out and "(trial)" not in out
    assert "slot b: empty" in out


def _security_events(srv: Server, station: str, want: str) -> list[dict[str, Any]]:
    return list(
        wait_for(
            lambda: [e for e in srv.station(station)["security_events"] if e["type"] == want],
            15,
            f"security event {want}",
        )
    )


def test_untrusted_signing_certificate_refused(
    fleet: tuple[Server, Path], pki: Pki, other_pki: Pki, factory_bundle: Path
) -> None:
    srv, root = fleet
    foreign = other_pki.bundle(root / "mallory-9.9.9.cwb", "9.9.9", 99)
    detail, statuses, state = _attack(srv, root, pki, factory_bundle, "CP-UNTRUSTED", foreign)
    assert detail["response"] == "InvalidCertificate"
    assert statuses == []  # L01: no download at all
    events = _security_events(srv, "CP-UNTRUSTED", "InvalidFirmwareSigningCertificate")
    assert "not issued by an installed root" in events[0]["tech_info"]
    assert detail["firmware_version"] == "1.0.0"
    _slot_untouched(state)


def _flip_blob_byte(srv: Server, release: dict[str, Any]) -> None:
    blob = srv.data_dir / "blobs" / "sha256" / release["images"][0]["sha256"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))


def test_tampered_image_refused(fleet: tuple[Server, Path], pki: Pki, factory_bundle: Path) -> None:
    srv, root = fleet
    bundle = pki.bundle(root / "tamper-1.1.0.cwb", "1.1.0", 2)
    detail, statuses, state = _attack(
        srv, root, pki, factory_bundle, "CP-TAMPER", bundle, _flip_blob_byte
    )
    assert detail["response"] == "Accepted"
    assert statuses == ["Downloading", "Downloaded", "InvalidSignature"]
    _security_events(srv, "CP-TAMPER", "InvalidFirmwareSignature")
    assert detail["firmware_version"] == "1.0.0"
    _slot_untouched(state)


def test_wrong_signature_refused(
    fleet: tuple[Server, Path], pki: Pki, factory_bundle: Path
) -> None:
    srv, root = fleet
    good = srv.upload(pki.bundle(root / "other-1.2.0.cwb", "1.2.0", 2))
    bundle = pki.bundle(root / "wrongsig-1.1.1.cwb", "1.1.1", 2)

    def swap_signature(srv: Server, release: dict[str, Any]) -> None:
        # A genuine signature by the genuine key, but over a different image.
        with sqlite3.connect(srv.data_dir / "chargeward.db") as db:
            (sig,) = db.execute(
                "SELECT signature FROM release_images WHERE release_id=?", (good["id"],)
            ).fetchone()
            db.execute(
                "UPDATE release_images SET signature=? WHERE release_id=?", (sig, release["id"])
            )

    detail, statuses, state = _attack(
        srv, root, pki, factory_bundle, "CP-WRONGSIG", bundle, swap_signature
    )
    assert detail["response"] == "Accepted"
    assert statuses == ["Downloading", "Downloaded", "InvalidSignature"]
    _security_events(srv, "CP-WRONGSIG", "InvalidFirmwareSignature")
    _slot_untouched(state)


@pytest.mark.slow  # 30 s beside the suite's other tests on 2 cores
def test_downgrade_below_rollback_floor_refused(
    fleet: tuple[Server, Path], pki: Pki, factory_bundle: Path
) -> None:
    srv, root = fleet
    old = pki.bundle(root / "old-0.9.0.cwb", "0.9.0", 0)  # factory image has security version 1
    detail, statuses, state = _attack(srv, root, pki, factory_bundle, "CP-DOWNGRADE", old)
    assert statuses == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallVerificationFailed",
    ]
    events = _security_events(srv, "CP-DOWNGRADE", "FirmwareRollbackRefused")
    assert "below the rollback floor 1" in events[0]["tech_info"]
    assert detail["firmware_version"] == "1.0.0"
    _slot_untouched(state)
