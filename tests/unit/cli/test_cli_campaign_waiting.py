"""``chargeward campaign`` against the real API on 127.0.0.1: ``create`` is refused for a
one-charger site with ``keep_available = 1`` (exit 1, the reason and the fix), and with
``--allow-unreachable-sites`` creates the campaign and prints the warning; ``show`` counts
the waiting stations per reason and ``stations`` prints each one's reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.server.fleet import fleet, station_registry
from chargeward.server.store.tables import Station
from tests.support.accounts_api import NOW, AccountsApi
from tests.support.fleet import MODEL, Pki
from tests.support.served_api import served_api
from tests.support.stored_releases import stored_release


def test_campaign_commands_refuse_an_unreachable_site_and_print_why_stations_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = Pki.create(tmp_path / "pki")
    box: dict[str, str] = {}

    async def seed(env: AccountsApi) -> str:
        db = env.state.db
        box["release"] = await stored_release(db, tmp_path, pki, "1.1.0", 2, NOW)
        async with db.session() as s:
            await fleet.create_site(
                s, fleet.SiteInput("corner", "Corner", None, "UTC", []), actor="t", now=NOW
            )
            for sid, site in (("CP-1", "corner"), ("CP-2", None)):
                await station_registry.register_station(s, sid, actor="t", model=MODEL, now=NOW)
                row = await s.get(Station, sid)
                assert row is not None
                row.firmware_version, row.site_id, row.connected = "1.0.0", site, True
        return env.admin_token

    runner = CliRunner()
    monkeypatch.setenv("COLUMNS", "250")

    def cw(*args: str, code: int = 0) -> str:
        r = runner.invoke(app, [*args, "--data-dir", str(tmp_path / "cli")])
        assert r.exit_code == code, (args, r.output, r.exception)
        return r.output + (str(r.exception) if r.exception else "")

    with served_api(tmp_path / "data", seed) as (url, token):
        monkeypatch.setenv("CHARGEWARD_SERVER", url)
        monkeypatch.setenv("CHARGEWARD_API_TOKEN", token)
        campaign = tmp_path / "c1.toml"
        campaign.write_text(
            f'name = "c1"\nrelease = "{box["release"]}"\njitter = "0"\n'
            f'[target]\nmodels = ["{MODEL}"]\n[stages]\ncanary = "100%"\n'
        )
        refused = " ".join(cw("campaign", "create", str(campaign), code=1).split())
        assert "site corner has 1 charger and keep_available = 1 (CP-1)" in refused
        assert "--allow-unreachable-sites" in refused
        assert "c1" not in cw("campaign", "list")

        made = " ".join(
            cw("campaign", "create", str(campaign), "--allow-unreachable-sites").split()
        )
        assert "created campaign c1" in made
        assert (
            "warning: site corner has 1 charger and keep_available = 1 (CP-1): its 1 target "
            "station wait (reason site_floor)" in made
        )
        shown = cw("campaign", "show", "c1")
        assert "waiting: next_tick 1, site_floor 1" in " ".join(shown.split())
        listed = cw("campaign", "stations", "c1")
        assert "waiting for" in listed
        line = next(x for x in listed.splitlines() if "CP-1" in x)
        assert "site_floor: site corner has 1 charger; keep_available = 1" in " ".join(line.split())
