"""Delta updates through the real server and a real agent process: the server makes a delta
from the version the station reports, offers it in UpdateFirmware, and the agent rebuilds the
image from its running slot; a corrupted or mismatched delta falls back to the full image,
and the charger says why."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from chargeward.agent.state import StateDir
from tests.support.agent_harness import L01_HAPPY
from tests.support.campaigns import api, campaign_doc, state_is, until
from tests.support.deltas import PAYLOAD_100, PAYLOAD_110, STATION, published_delta_release
from tests.support.fleet import MODEL, Pki, assert_no_crash, cli, running_server, wait_for


def _update(srv: Any, release_id: str) -> dict[str, Any]:
    r = srv.api(
        "POST",
        "/api/v1/stations/CP-0001/firmware-updates",
        json={"release_id": release_id, "retry_interval": 1},
    )
    assert r["station_response"] == "Accepted"
    rid = r["request_id"]
    detail = wait_for(
        lambda: (d := srv.station("CP-0001"))["updates"][-1]["outcome"] != "pending" and d,
        60,
        "the update to finish",
    )
    assert detail["updates"][-1]["outcome"] == "succeeded", detail["updates"][-1]
    assert detail["firmware_version"] == "1.1.0"
    statuses = [e["status"] for e in detail["firmware_statuses"] if e["request_id"] == rid]
    return {"statuses": statuses, "tid": r["transaction_id"]}


def _upload(srv: Any, bundle: Path) -> dict[str, Any]:
    cli("release", "upload", str(bundle), "--data-dir", str(srv.data_dir))
    version = bundle.name.split("-")[1].removesuffix(".cwb")
    return next(r for r in srv.api("GET", "/api/v1/releases") if r["version"] == version)


def _start(srv: Any, tmp_path: Path, pki: Pki) -> tuple[Any, Any]:
    factory = pki.bundle(tmp_path / "acme-1.0.0.cwb", "1.0.0", 1, payload=PAYLOAD_100)
    agent, _ = srv.start_agent(tmp_path, pki, "CP-0001", factory)
    assert srv.wait_connected("CP-0001")["firmware_version"] == "1.0.0"
    return agent, factory


@pytest.mark.slow  # 36 s beside the suite's other tests on 2 cores
def test_station_rebuilds_the_release_from_a_delta_of_its_running_image(
    tmp_path: Path, pki: Pki
) -> None:
    with running_server(tmp_path, pki) as srv:
        agent, factory = _start(srv, tmp_path, pki)
        base = _upload(srv, factory)
        assert base["deltas"] == []  # nobody runs an older version
        update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, payload=PAYLOAD_110)
        release = _upload(srv, update)
        [delta] = release["deltas"]
        image = release["images"][0]
        assert delta["from_version"] == "1.0.0"
        assert delta["from_sha256"] == base["images"][0]["sha256"]
        assert delta["length"] < image["length"] * 0.02  # a 1-line change to a 216 KB image

        done = _update(srv, release["id"])
        assert done["statuses"] == L01_HAPPY
        trail = srv.api("GET", "/api/v1/audit", params={"transaction_id": done["tid"]})
        assert trail[0]["details"]["delta_sha256"] == delta["sha256"]
        assert not any("note" in e["details"] for e in trail)  # no fallback
        log = agent.stop()
    assert f"image rebuilt from a {delta['length']}-byte delta" in log
    assert "delta not used" not in log
    assert_no_crash(srv.proc.output())
    assert_no_crash(log)


@pytest.mark.slow  # 39 s beside the suite's other tests on 2 cores
def test_a_corrupted_delta_falls_back_to_the_full_image_and_says_why(
    tmp_path: Path, pki: Pki
) -> None:
    with running_server(tmp_path, pki) as srv:
        agent, factory = _start(srv, tmp_path, pki)
        _upload(srv, factory)
        update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, payload=PAYLOAD_110)
        release = _upload(srv, update)
        [delta] = release["deltas"]
        blob = srv.data_dir / "blobs" / "sha256" / delta["sha256"]
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # flipped on the server's disk, or on the way
        blob.write_bytes(bytes(data))

        done = _update(srv, release["id"])
        # Downloading twice: the delta, then (after the note) the full image.
        assert done["statuses"] == ["Downloading", *L01_HAPPY]
        trail = srv.api("GET", "/api/v1/audit", params={"transaction_id": done["tid"]})
        notes = [e["details"]["note"] for e in trail if "note" in e["details"]]
        assert notes == [
            "delta not used: the delta downloaded differs from the offer "
            f"({hashlib.sha256(bytes(data)).hexdigest()[:12]})"
        ]
        log = agent.stop()
    assert "delta not used" in log and "downloading the full image" in log
    assert_no_crash(srv.proc.output())
    assert_no_crash(log)


@pytest.mark.slow  # 44 s beside the suite's other tests on 2 cores
def test_a_delta_for_another_build_of_the_running_version_is_not_applied(
    tmp_path: Path, pki: Pki
) -> None:
    """The server holds a different 1.0.0 build than the station runs: the delta's base
    differs, the charger checks it before downloading anything and takes the full image."""
    with running_server(tmp_path, pki) as srv:
        agent, _ = _start(srv, tmp_path, pki)
        other = tmp_path / "other"
        other.mkdir()
        rebuilt = pki.bundle(
            other / "acme-1.0.0.cwb", "1.0.0", 1, payload=PAYLOAD_100 + b"another build\n"
        )
        _upload(srv, rebuilt)
        update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, payload=PAYLOAD_110)
        release = _upload(srv, update)
        assert len(release["deltas"]) == 1

        done = _update(srv, release["id"])
        assert done["statuses"] == ["Downloading", *L01_HAPPY]
        trail = srv.api("GET", "/api/v1/audit", params={"transaction_id": done["tid"]})
        [note] = [e["details"]["note"] for e in trail if "note" in e["details"]]
        assert note.startswith("delta not used: the delta applies to image ")
        assert "this charger runs" in note
        log = agent.stop()
    assert_no_crash(srv.proc.output())
    assert_no_crash(log)


@pytest.mark.slow  # 79 s beside the suite's other tests on 2 cores
async def test_a_campaign_ships_the_tuf_listed_delta_and_the_station_checks_both_ends(
    tmp_path: Path, pki: Pki
) -> None:
    async with published_delta_release(tmp_path, pki) as lab:
        [delta] = lab.release["deltas"]
        image = lab.release["images"][0]
        # The published targets list the delta beside the image, with both ends' digests.
        proposal = await api(lab.srv, "GET", f"/api/v1/releases/{lab.release['id']}/proposal")
        listed = {t["path"]: t for t in proposal["added"]}
        entry = listed[f"firmware/{MODEL}/1.1.0/main.from-1.0.0.cwdl"]
        assert (entry["sha256"], entry["length"]) == (delta["sha256"], delta["length"])
        assert entry["custom"]["delta"]["to"] == {
            "sha256": image["sha256"],
            "length": image["length"],
        }
        created = await api(
            lab.srv, "POST", "/api/v1/campaigns", json=campaign_doc("d", lab.release["id"])
        )
        await until(lambda: state_is(lab.srv, created["id"], STATION, "succeeded"), "success")
        # One download, of the delta only.
        assert [s.bytes_received for s in lab.agent.download_stats] == [delta["length"]]
        events = [e.type for e in lab.agent.security_log.entries()]
        assert "FirmwareRepositoryCheckFailed" not in events
    state = StateDir(tmp_path / STATION)
    slot = state.slot_image("b")
    assert hashlib.sha256(slot.read_bytes()).hexdigest() == image["sha256"]
