"""Operator accounts from the CLI against a real server: first admin, login, scoped tokens."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pyotp
from typer.testing import CliRunner

from chargeward.cli.main import app
from tests.support.fleet import Pki, running_server

PASSWORD = "a long enough passphrase"


def test_first_admin_logs_in_and_mints_a_scoped_token(tmp_path: Path, pki: Pki) -> None:
    runner = CliRunner()
    with running_server(tmp_path, pki) as srv:
        data = str(srv.data_dir)

        def run(*args: str, token: str | None = None, code: int = 0) -> str:
            env = {"CHARGEWARD_PASSWORD": PASSWORD}
            if token:
                env["CHARGEWARD_API_TOKEN"] = token
            r = runner.invoke(app, [*args, "--data-dir", data], env=env)
            assert r.exit_code == code, (r.output, r.exception)
            # An error reaches the entry point as the exception it prints as one line.
            return r.output + (str(r.exception) if r.exception else "")

        # The admin token of the first start creates the first admin user.
        out = run("user", "add", "root", "--role", "admin")
        secret = re.search(r"TOTP secret: (\w+)", out)
        assert secret and "otpauth://totp/Chargeward:root" in out
        totp = pyotp.TOTP(secret[1])

        refused = run("login", "root", code=1)  # no TOTP code for an admin
        assert "401 unauthenticated" in refused and "TOTP code required" in refused

        run("login", "root", "--totp", totp.now())
        session = srv.data_dir / "session.token"
        assert stat.S_IMODE(session.stat().st_mode) == 0o600
        assert "root" in run("user", "list")  # as root, from the session file

        out = run("token", "create", "ci", "--scope", "stations:read", "--expires-in", "1h")
        ci = out.strip().rsplit(" ", 1)[-1]
        assert ci.startswith("cwt_")
        assert "ci" in run("token", "list")
        # The ci token may read stations but not manage users or mint tokens.
        assert run("station", "list", token=ci) is not None
        denied = run("user", "list", token=ci, code=1)
        assert "403 forbidden" in denied and "lacks the permission users:manage" in denied

        run("user", "add", "eve", "--role", "auditor")
        promoted = run("user", "set-role", "eve", "operator")
        assert "eve enrols TOTP at the next login" in promoted  # no secret for root to see
        assert "sessions and tokens ended" in run("user", "reset-totp", "eve")
        run("user", "disable", "eve")
        assert "disabled" in run("user", "list")

        run("logout")
        assert not session.exists()
        trail = srv.api("GET", "/api/v1/audit")
        actions = [(e["actor"], e["action"], e["target"]) for e in trail]
        assert ("admin", "user.create", "root") in actions
        made = next(e for e in trail if e["action"] == "user.create" and e["target"] == "root")
        assert made["details"]["principal"] == "token"  # the host token admin, not a user
        assert ("root", "token.create", "ci") in actions
        assert ("root", "user.disable", "eve") in actions
        assert ("root", "user.totp_reset", "eve") in actions
        assert ("root", "auth.logout", "root") in actions
