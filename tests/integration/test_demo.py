"""`chargeward demo --quick` (what `make demo` runs, on a smaller fleet) tells the whole story
and exits 0: releases gated, signed and approved 2 of 3, a canary-first campaign started by a
second person over chargers on three sites, a bad release stopped at its canary, checks, and
an audit log that verifies offline and names who did what."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_quick_demo_updates_the_fleet_and_stops_the_bad_release(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "chargeward", "demo", "--quick", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=420,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Traceback" not in out
    assert "24/24 chargers on 1.1.0" in out
    assert "bob: approved: release 1.1.0 approved by alice, bob (2 of 2)" in out
    assert "alice (second person): running" in out
    assert "campaign rollout-1.1.0: completed" in out
    assert "rollout-1.2.0 paused itself: 1 of 1 finished stations failed" in out
    assert "checks: passed" in out
    assert "audit log exported and verified offline: verified" in out
    # The HTTP listener speaks https (ADR 0025): server.json, the links it hands out and the
    # chargers' downloads (tunnelled through the site links, the lab CA verified).
    info = re.search(r"server\.json: api_url (\S+), download_base_url (\S+)", out)
    assert info is not None, out[-4000:]
    assert info[1].startswith("https://127.0.0.1:") and info[2].startswith("https://"), info[0]
    assert re.search(r"dashboard: https://127\.0\.0\.1:\d+/ \(log in as demo", out), out[-2000:]
    tunnels = re.search(r"site links: (\d+) firmware downloads over https", out)
    assert tunnels is not None and int(tunnels[1]) >= 24, out[-4000:]
    assert re.findall(r"http://\S+", out) == []  # no plain-HTTP URL printed
    login = (work / "dashboard-login.txt").read_text()
    assert "user: demo" in login and "TOTP secret: " in login
    for tz in ("Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Paris"):
        assert tz in out
    # A site of OCPP 1.6J chargers (issue 30): the legacy one marked by dave, the consequence
    # said, and every protocol's chargers updated.
    said = " ".join(out.split())  # the console wraps long lines
    assert re.search(r"dave: PAR-LEG-\S+ marked legacy_firmware_update .*guarantees stop", said)
    assert "rollout-1.1.0, OCPP 1.6 legacy: 1 station; runs: 1 succeeded" in out
    assert re.search(r"rollout-1\.1\.0, OCPP 1\.6 whitepaper: (\d+) stations; runs: \1 succ", out)

    entries = [
        e
        for line in (work / "audit-export.jsonl").read_text().splitlines()
        if (e := json.loads(line))["type"] == "entry"
    ]
    who = Counter((e["action"], e["actor"]) for e in entries)
    # Who approved what: 2 of 3 approvers on each release, the campaign started by a second
    # person, and the bad campaign aborted by its operator.
    assert who[("release.approved", "alice")] == who[("release.approved", "bob")] == 2
    assert who[("release.published", "carol")] == 2
    assert who[("campaign.created", "dave")] == 2 and who[("campaign.approved", "alice")] == 2
    assert who[("campaign.aborted", "dave")] == 1
    # What went where: the good release to every charger, the bad one to its canary only.
    requested = Counter(e["actor"] for e in entries if e["action"] == "firmware.update_requested")
    assert requested["campaign:rollout-1.2.0"] == 1
    assert requested["campaign:rollout-1.1.0"] >= 24
    # What each charger reported: 24 chargers, every one its statuses.
    reporters = {e["actor"] for e in entries if e["action"] == "station.firmware_status"}
    assert len(reporters) == 24
