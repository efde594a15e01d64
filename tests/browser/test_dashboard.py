"""The dashboard in a real browser: Playwright driving Debian's Chromium (``/usr/bin/chromium``,
from ``make system-deps``; Playwright never downloads a browser) against a real server process
with simulated chargers (the real agent code, one event loop).

One fleet, one story, in order: an operator logs in with password and TOTP and creates a
campaign from the form (the selector preview counts the stations); the two-person rule holds
it until an approver, logged in separately, starts it; the operator's page follows the
progress live, without a reload, to completed.  Then one charger's active slot is altered on
its flash and it loses power: it falls back to the other slot and reports
TamperDetectionActivated, and the overview shows the drift alert and the security page the
event.  An auditor sees the campaign but no action, and a forged action is refused; a visitor
without a session is sent to log in.  Screenshots of the main pages are saved as test
artifacts in ``reports/screenshots/``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from cryptography import x509
from playwright.async_api import Browser, BrowserContext, Page, expect
from rich.console import Console

from chargeward.agent import installer
from chargeward.agent.state import StateDir
from chargeward.agent.verify import accept_image, verify_image
from chargeward.local import LabTls
from chargeward.release.bundle import verify_bundle
from chargeward.sim import flash as flash_mod
from chargeward.sim import server as backend
from chargeward.sim.releases import make_releases
from chargeward.sim.runner import SimOptions, Simulation, log_to
from chargeward.sim.scenario import parse_scenario
from tests.support.browser import log_in, open_page, shot

PASSWORD = "a long browser-test passphrase"  # generated test fixture, not a secret
STATIONS = 6
SCENARIO = f"""
seed = 5
duration = 600
[releases]
versions = ["1.0.0", "1.1.0", "1.2.0"]
image_kib = 16
[campaign]
release = "1.1.0"
[[sites]]
id = "depot"
timezone = "Europe/London"
windows = "always"
[[fleet]]
count = {STATIONS}
site = "depot"
firmware = "1.0.0"
prefix = "WEB"
""".encode()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
]


@dataclass
class Fleet:
    srv: backend.Backend
    sim: Simulation
    secrets: dict[str, str]  # user -> TOTP secret
    bundles: dict[str, Path]
    roots_pem: bytes

    def totp(self, user: str) -> str:
        """A code of a time-step not used yet (each step is accepted once per user)."""
        return pyotp.TOTP(self.secrets[user]).now()


@pytest.fixture
async def fleet(tmp_path: Path, lab_tls: LabTls) -> AsyncIterator[Fleet]:
    scenario = parse_scenario(SCENARIO, "browser.toml")
    made = make_releases(
        tmp_path, scenario.versions, image_bytes=scenario.image_bytes, models=["AC22"]
    )
    srv = backend.Backend.start(
        tmp_path / "server", made.root_pem, tmp_path / "server.log", made.passphrase,
        approval_threshold=1,  # every campaign here needs a second person to start it
        tls=lab_tls,  # the dashboard over https; the chargers trust its CA (csms-roots.pem)
    )  # fmt: skip
    assert srv.api_url.startswith("https://")
    sim = Simulation(scenario, SimOptions(), Console(file=open(os.devnull, "w")))  # noqa: SIM115
    root = flash_mod.flash_root("cw-browser-")
    log_to(tmp_path / "agents.log")
    flash_mod.install_hook()
    try:
        async with srv.client() as admin:
            await backend.upload_releases(admin, made.bundles)
            await sim.bring_up(srv, admin, made.bundles, made.root_pem.read_bytes(), root)
            assert sim.connected == STATIONS
            secrets = {}
            for user, role in (("olive", "operator"), ("adam", "approver"), ("aud", "auditor")):
                made_user = await backend.call(
                    admin,
                    "POST",
                    "/api/v1/users",
                    json={"username": user, "password": PASSWORD, "role": role},
                )
                secrets[user] = made_user["totp_secret"]
        yield Fleet(srv, sim, secrets, made.bundles, made.root_pem.read_bytes())
    finally:
        await sim.shut_down()
        flash_mod.remove_hook()
        srv.stop()
        flash_mod.remove_root(root)


async def session(browser: Browser, fleet: Fleet, user: str | None) -> tuple[BrowserContext, Page]:
    if user is None:
        return await open_page(browser, fleet.srv.api_url)
    totp = fleet.totp(user) if fleet.secrets[user] else None  # auditors have none
    return await log_in(browser, fleet.srv.api_url, user, PASSWORD, totp)


async def test_operator_and_approver_run_a_campaign_and_see_tamper_and_drift(
    browser: Browser, fleet: Fleet, tmp_path: Path
) -> None:
    # A visitor without a session is sent to the login page, which keeps where they were going.
    anon_ctx, anon = await session(browser, fleet, None)
    await anon.goto("/campaigns")
    assert anon.url.endswith("/login?next=/campaigns"), anon.url
    await shot(anon, "login")
    # A wrong TOTP code: refused with a message, no session.
    await anon.get_by_label("User name").fill("olive")
    await anon.get_by_label("Password").fill(PASSWORD)
    await anon.get_by_label("Authenticator code").fill("000000")
    await anon.get_by_role("button", name="Log in").click()
    await expect(anon.get_by_role("alert")).to_be_visible()
    await anon.goto("/")
    assert "/login" in anon.url
    await anon_ctx.close()

    _, olive = await session(browser, fleet, "olive")
    await expect(olive.locator("#total")).to_have_text(str(STATIONS))
    await shot(olive, "overview")

    # The operator creates the campaign from the form; the preview counts matching stations.
    await olive.get_by_role("link", name="Campaigns").click()
    form = olive.locator("#new-campaign")
    await form.get_by_label("Model").select_option("AC22")
    await expect(olive.locator("#matched")).to_have_text(str(STATIONS))
    await expect(olive.locator("#preview-sites")).to_contain_text("Europe/London")
    await form.get_by_label("Name").fill("browser-rollout")
    await form.get_by_label("Release", exact=True).select_option(label="1.1.0 (AC22; pending)")
    await form.get_by_label("Canary").fill("1")
    await form.get_by_label("Then").fill("100%")
    await form.get_by_label("Soak between stages").fill("1s")
    await form.get_by_label("Random start delay").fill("0")
    await shot(olive, "campaign-form")
    await form.get_by_role("button", name="Create campaign").click()
    await expect(olive.get_by_role("heading", name="Campaign browser-rollout")).to_be_visible()
    await expect(olive.locator("#status")).to_have_text("awaiting_approval")
    # Two-person rule: its creator has no start button.
    assert await olive.get_by_role("button", name="Approve and start").count() == 0
    await olive.evaluate("window.__notReloaded = true")
    campaign_url = olive.url

    # The approver, in another browser session, starts it.
    _, adam = await session(browser, fleet, "adam")
    await adam.goto(campaign_url)
    await adam.get_by_role("button", name="Approve and start").click()
    await expect(adam.locator("#status")).not_to_have_text("awaiting_approval")

    # The operator's page follows the rollout live, without a reload, to completed.
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + 180
    while asyncio.get_running_loop().time() < deadline:
        seen.add(await olive.locator("#status").inner_text())
        if "completed" in seen:
            break
        await asyncio.sleep(0.5)
    assert "completed" in seen and "running" in seen, seen
    assert await olive.evaluate("window.__notReloaded === true")
    await expect(olive.locator('[data-state="succeeded"]')).to_have_text(str(STATIONS))
    # The outcomes-over-time chart: every station entered "succeeded", none failed.
    await expect(olive.locator('[data-outcome="succeeded"]')).to_have_text(str(STATIONS))
    await expect(olive.locator('[data-outcome="failed"]')).to_have_text("0")
    await expect(olive.locator("#outcomes polyline.succeeded")).to_have_count(1)
    await expect(olive.get_by_role("button", name="Abort")).to_have_count(0)  # live too
    await shot(olive, "campaign-completed")
    assert all(st.flash.verified_version() == "1.1.0" for st in fleet.sim.stations)

    # A charger's active slot is altered on its flash, then it loses power: no slot it may
    # boot verifies (the other holds 1.0.0, below its rollback floor), so it reports the
    # tamper and stays in quarantine.
    tampered = fleet.sim.stations[0]
    state = tampered.flash.state()
    image = state.slot_image(state.boot_control().active)
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    image.write_bytes(bytes(data))
    tampered.flash.cut.set()
    # Another is flashed locally with 1.2.0 (signed, but never sent by this server): drift.
    drifted = fleet.sim.stations[2]
    flash_locally(drifted.flash.state(), fleet, "1.2.0", tmp_path / "local")
    drifted.flash.cut.set()
    await wait_for_alert(fleet, tampered.plan.station_id, "security_event")
    await wait_for_alert(fleet, drifted.plan.station_id, "firmware_drift")
    await olive.goto("/")
    await expect(olive.locator("#drift")).to_contain_text(drifted.plan.station_id)
    await expect(olive.locator("#drift")).to_contain_text("1.2.0")
    await expect(olive.locator("#drift-count")).to_have_text("1")
    await shot(olive, "overview-drift")
    await olive.get_by_role("link", name="Security").click()
    alerts = olive.locator("#alerts")
    await expect(alerts).to_contain_text(tampered.plan.station_id)
    await expect(alerts).to_contain_text("TamperDetectionActivated")
    assert await olive.locator("#events").count() == 0  # the events themselves: audit:read

    # An auditor sees the campaign and its stations but no action; a forged action is refused.
    _, aud = await session(browser, fleet, "aud")
    await aud.goto("/security")
    await expect(aud.locator("#events")).to_contain_text("TamperDetectionActivated")
    await shot(aud, "security")
    await aud.goto(campaign_url)
    await expect(aud.locator("#status")).to_have_text("completed")
    assert await aud.locator(".actions button").count() == 0
    await aud.goto("/campaigns")
    assert await aud.get_by_role("heading", name="New campaign").count() == 0
    csrf = await aud.locator('input[name="csrf"]').first.get_attribute("value")
    forged = await aud.request.post(
        f"{campaign_url}/abort", form={"csrf": csrf or ""}, max_redirects=0
    )
    assert forged.status == 403, await forged.text()
    assert "campaigns:write" in await forged.text()
    # Without the form's CSRF token even the operator's own session cannot act.
    no_token = await olive.request.post(f"{campaign_url}/pause", form={}, max_redirects=0)
    assert no_token.status == 403 and "CSRF" in await no_token.text()

    # The per-station timeline of OCPP statuses.
    await olive.goto(campaign_url)
    await olive.get_by_text(f"Stations ({STATIONS})").click()
    await olive.get_by_role("link", name=fleet.sim.stations[1].plan.station_id).click()
    timeline = olive.locator("#timeline")
    for status in ("Downloaded", "SignatureVerified", "Installed"):
        await expect(timeline).to_contain_text(status)
    await shot(olive, "station-timeline")
    await olive.goto("/releases")
    await shot(olive, "releases")

    # Roll back: a new campaign for the stations that took 1.1.0, held for a second person
    # like any other (the operator then aborts it before it sends anything).  1.0.0 (security
    # version 1) is below the rollback floor those stations reached and is not offered; the
    # release they accept is.
    await olive.goto(campaign_url)
    offered = await olive.get_by_label("Release to return to").locator("option").all_inner_texts()
    assert offered == ["1.2.0 (security version 3; pending)"], offered
    rollback_to = offered[0]
    await olive.get_by_label("Release to return to").select_option(label=rollback_to)
    await olive.get_by_role("button", name="Create roll-back campaign").click()
    await expect(
        olive.get_by_role("heading", name="Campaign browser-rollout-rollback")
    ).to_be_visible()
    await expect(olive.locator("#status")).to_have_text("awaiting_approval")
    await olive.get_by_role("button", name="Abort").click()
    await expect(olive.locator("#status")).to_have_text("aborted")


async def wait_for_alert(fleet: Fleet, station_id: str, kind: str) -> None:
    alerts: list[dict[str, Any]] = []
    async with fleet.srv.client() as admin:
        for _ in range(120):
            alerts = await backend.call(
                admin, "GET", "/api/v1/alerts", params={"station_id": station_id}
            )
            if any(a["kind"] == kind for a in alerts):
                return
            await asyncio.sleep(0.5)
    raise AssertionError(f"no {kind} alert for {station_id}: {alerts}")


def flash_locally(state: StateDir, fleet: Fleet, version: str, work: Path) -> None:
    """What a technician's service tool does: a manufacturer-signed image, verified as the
    bootloader requires, written into the inactive slot as a trial, outside any campaign."""
    roots = [x509.load_pem_x509_certificate(fleet.roots_pem)]
    release = verify_bundle(fleet.bundles[version], roots, workdir=work)
    img = release.images[0]
    cert = x509.load_pem_x509_certificate(release.signing_certificate_pem.encode())
    signed = verify_image(
        img.file, cert, img.signature, model="AC22", rollback_floor=state.rollback_floor()
    )
    installer.write_slot(state, accept_image(signed, None), 4242, attempts=3)
    installer.mark_rebooting(state)
