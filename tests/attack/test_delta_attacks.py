"""Attacks through the delta path: a server (or its database) that offers a delta other than
the one the approvers listed, rebuilding an image of the attacker's choosing.  The charger
refuses the delta for the right reason, reports it, installs the genuine release from the full
image and never writes the attacker's image to a slot."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from pathlib import Path

import pytest

from chargeward.agent.state import StateDir
from chargeward.release.bundle import verify_bundle
from chargeward.release.delta import make_delta
from tests.support.campaigns import api, campaign_doc, state_is, until
from tests.support.deltas import STATION, published_delta_release
from tests.support.fleet import Pki


@pytest.mark.slow  # 74 s beside the suite's other tests on 2 cores
async def test_a_delta_the_repository_does_not_list_is_refused_and_the_full_image_installed(
    tmp_path: Path, pki: Pki
) -> None:

    async with published_delta_release(tmp_path, pki) as lab:
        [listed] = lab.release["deltas"]
        image = lab.release["images"][0]
        # The attacker's image: the genuine one with a backdoor appended.
        with tempfile.TemporaryDirectory() as tmp:
            base = verify_bundle(lab.factory, [pki.root_cert], workdir=Path(tmp) / "v")
            evil = Path(tmp) / "evil.cwfw"
            evil.write_bytes(lab.data.joinpath("blobs", "sha256", image["sha256"]).read_bytes())
            with evil.open("ab") as fh:
                fh.write(b"backdoor")
            forged = make_delta(base.images[0].file, evil, Path(tmp) / "evil.cwdl")
            blob = lab.data / "blobs" / "sha256" / forged.sha256
            blob.write_bytes((Path(tmp) / "evil.cwdl").read_bytes())
        # A compromised server database offers the forged delta in place of the listed one.
        with sqlite3.connect(lab.data / "chargeward.db") as db:
            changed = db.execute(
                "UPDATE release_deltas SET sha256 = ?, length = ? WHERE sha256 = ?",
                (forged.sha256, forged.length, listed["sha256"]),
            ).rowcount
        assert changed == 1
        doc = campaign_doc("forged-delta", lab.release["id"])
        created = await api(lab.srv, "POST", "/api/v1/campaigns", json=doc)
        await until(lambda: state_is(lab.srv, created["id"], STATION, "succeeded"), "success")
        # The forged delta was downloaded, refused by the TUF check, then the full image.
        assert [s.bytes_received for s in lab.agent.download_stats] == [
            forged.length,
            image["length"],
        ]
        refused = [
            e.tech_info
            for e in lab.agent.security_log.entries()
            if e.type == "FirmwareRepositoryCheckFailed"
        ]
        assert refused == [
            "delta refused: hash: firmware/AC22/1.1.0/main.from-1.0.0.cwdl differs from what "
            "the repository lists"
        ]
        detail = lab.srv.station(STATION)
    assert [e["type"] for e in detail["security_events"]] == [
        "FirmwareRepositoryCheckFailed",
        "FirmwareUpdated",
    ]
    slot = StateDir(tmp_path / STATION).slot_image("b")
    assert hashlib.sha256(slot.read_bytes()).hexdigest() == image["sha256"]
    assert b"backdoor" not in slot.read_bytes()
