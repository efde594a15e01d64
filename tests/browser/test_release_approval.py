"""Release approval and the audit log in a real browser (Debian's Chromium, Playwright) against a
real server process with a 2-of-3 TUF repository.

carol uploads release 1.1.0 and alice approves it from the command line.  bob, the second
approver, signs the proposal on his own machine (``chargeward release approve --output``: the
key never reaches the server) and submits the approval file in the dashboard, confirmed with a
fresh TOTP code; a wrong code and a file that is not an approval are refused and change
nothing.  An operator sees no approval form and a forged one is refused.  carol publishes from
the release page.  The audit log then shows who approved, confirmed how, and the entry's
verify page checks it against a signed checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Browser, expect

from chargeward.local import LabTls
from tests.support.browser import log_in, shot
from tests.support.fleet import MODEL, Pki, cli, running_server
from tests.support.trust import TufKeys

PASSWORD = "a long browser-test passphrase"  # generated test fixture, not a secret

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def code(secret: str, steps_ahead: int = 0) -> str:
    """The TOTP code of the current time-step, or of the next (one step of drift is allowed,
    and each step is accepted once per user: a login and a confirmation need two)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


async def test_a_second_approver_approves_in_the_browser_and_the_release_is_published(
    browser: Browser, tmp_path: Path, pki: Pki, lab_tls: LabTls
) -> None:
    data = tmp_path / "server-data"
    keys = TufKeys.create(tmp_path / "tuf-keys")
    keys.init_cli(data, root_out=tmp_path / "root.json")
    bundle = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, models=[MODEL])
    with running_server(tmp_path, pki, tls=lab_tls) as srv:
        assert srv.api_url.startswith("https://") and srv.ca is not None
        # A token acts under its own name, and a name is a token's or a user's, never both:
        # alice approves from the command line with her token; bob and carol are users of the
        # dashboard, so the upload and bob's offline signing go through a CI host token (an
        # approval file only counts once bob submits it signed in as himself).
        tokens = {
            n: cli("token", "create", n, "--data-dir", str(data)).stdout.strip().rsplit(" ", 1)[-1]
            for n in ("alice", "release-ci")
        }

        def as_(who: str, *args: str) -> str:
            env = {"CHARGEWARD_API_TOKEN": tokens[who], "SSL_CERT_FILE": str(srv.ca)}
            r = cli(*args, "--data-dir", str(data), env=env)
            return r.stdout + r.stderr

        as_("release-ci", "release", "upload", str(bundle))
        rid = srv.api("GET", "/api/v1/releases")[0]["id"]
        assert "(1 of 2)" in as_("alice", "release", "approve", rid, "--key", keys.uri("alice"))
        approval_file = tmp_path / "approval-bob.json"
        out = as_(
            "release-ci",
            "release",
            "approve",
            rid,
            "--key",
            keys.uri("bob"),
            "-o",
            str(approval_file),
        )
        assert "written to" in out and approval_file.exists()
        assert len(srv.api("GET", f"/api/v1/releases/{rid}/approvals")[0]["approvals"]) == 1

        secrets = {}
        for user, role in (
            ("bob", "approver"),
            ("carol", "release-manager"),
            ("olive", "operator"),
        ):
            made = srv.api(
                "POST",
                "/api/v1/users",
                json={"username": user, "password": PASSWORD, "role": role},
            )
            secrets[user] = made["totp_secret"]
        url = f"/releases/{rid}"

        # An operator sees the release but no approval form; a forged approval is refused.
        _, olive = await log_in(browser, srv.api_url, "olive", PASSWORD, code(secrets["olive"]))
        await olive.goto(url)
        await expect(olive.locator("#approval-state")).to_contain_text("1 of 2")
        assert await olive.locator("#approval").count() == 0
        assert await olive.get_by_role("link", name="Audit log").count() == 0
        csrf = await olive.locator('input[name="csrf"]').first.get_attribute("value")
        forged = await olive.request.post(
            f"{url}/approve",
            form={"csrf": csrf or "", "approval": approval_file.read_text(), "totp": "123456"},
        )
        assert forged.status == 403 and "releases:approve" in await forged.text()

        # bob, the second approver: a wrong code is refused, the approval is not counted.
        _, bob = await log_in(browser, srv.api_url, "bob", PASSWORD, code(secrets["bob"]))
        await bob.goto(url)
        await expect(bob.locator("#approvals")).to_contain_text("alice")
        await bob.get_by_label("Approval file").fill(approval_file.read_text())
        await bob.get_by_label("Your current TOTP code").fill("000000")
        await bob.get_by_role("button", name="Approve release 1.1.0").click()
        await expect(bob.get_by_role("alert")).to_contain_text("invalid TOTP code")
        await expect(bob.locator("#approval-state")).to_contain_text("1 of 2")
        # Something that is not an approval file: a clear message, nothing sent.
        await bob.get_by_label("Approval file").fill('{"keyid": "x"}')
        await bob.get_by_label("Your current TOTP code").fill(code(secrets["bob"], 1))
        await bob.get_by_role("button", name="Approve release 1.1.0").click()
        await expect(bob.get_by_role("alert")).to_contain_text("not an approval file")
        assert len(srv.api("GET", f"/api/v1/releases/{rid}/approvals")[0]["approvals"]) == 1
        # The real file and a fresh code: counted, the threshold is met.
        await bob.get_by_label("Approval file").fill(approval_file.read_text())
        await bob.get_by_label("Your current TOTP code").fill(code(secrets["bob"], 1))
        await shot(bob, "release-approve")
        await bob.get_by_role("button", name="Approve release 1.1.0").click()
        await expect(bob.get_by_role("status").first).to_contain_text(
            "approved by alice, bob (2 of 2)"
        )
        await expect(bob.locator("#approval-state")).to_contain_text("ready to publish")
        assert await bob.get_by_role("button", name="Publish release 1.1.0").count() == 0

        # carol (release manager) publishes from the page.
        _, carol = await log_in(browser, srv.api_url, "carol", PASSWORD, code(secrets["carol"]))
        await carol.goto(url)
        await carol.get_by_role("button", name="Publish release 1.1.0").click()
        await expect(carol.get_by_role("status").first).to_contain_text("targets version 2")
        assert srv.api("GET", f"/api/v1/releases/{rid}")["state"] == "published"
        await shot(carol, "release-published")

        # The audit log: bob's approval, confirmed with TOTP, verified under a signed checkpoint.
        srv.api("POST", "/api/v1/audit/checkpoints")
        await carol.get_by_role("link", name="Audit log").click()
        row = carol.locator("#audit tbody tr", has_text="release.approved").filter(has_text="bob")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("confirmed_with")
        await shot(carol, "audit-log")
        await row.get_by_role("link", name="verify").click()
        await expect(carol.locator("#verdict")).to_have_text("Verified")
        await expect(carol.locator("#checks .passed")).to_have_count(3)
        await expect(carol.locator("#checks")).to_contain_text("inclusion proof")
        await shot(carol, "audit-verify")
        # The refused confirmation is in the log too.
        await carol.goto("/audit?target=bob")
        await expect(carol.locator("#audit")).to_contain_text("auth.confirm_failed")
