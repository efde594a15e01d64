"""Simulation scenarios: the shipped example parses, plans are a function of the seed, and every
bad field is refused with the file and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargeward.errors import ConfigError
from chargeward.sim.plan import plan_fleet
from chargeward.sim.scenario import load_scenario, parse_scenario

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sim" / "ci-small.toml"

BASE = """seed = 7
[releases]
versions = ["1.0.0", "1.1.0"]
[campaign]
release = "1.1.0"
[[sites]]
id = "london"
timezone = "Europe/London"
windows = [{days = ["mon", "tue"], start = "01:00", end = "05:00"}]
link = {bandwidth = 250_000, latency_ms = 20}
[[sites]]
id = "tokyo"
timezone = "Asia/Tokyo"
[[fleet]]
count = 40
site = "london"
firmware = "1.0.0"
sessions = {per_hour = 2, mean_minutes = 1.5}
[[fleet]]
count = 10
site = "tokyo"
firmware = "1.0.0"
prefix = "TKY"
[faults]
link_drop = {probability = 0.3, at_byte = [2_000, 20_000]}
power_loss = {probability = 0.5, step = "random"}
bad_release = "1.1.0"
"""


def test_the_shipped_example_parses() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.stations == sum(g.count for g in scenario.fleet) > 0
    assert scenario.campaign["release"] in scenario.versions


def test_plans_depend_on_the_seed_and_the_station_only() -> None:
    first = plan_fleet(parse_scenario(BASE.encode(), "s.toml"))
    again = plan_fleet(parse_scenario(BASE.encode(), "s.toml"))
    assert first == again and len(first) == 50
    assert {p.station_id[:3] for p in first} == {"SIM", "TKY"}
    # A fleet of a different size keeps every common station's plan (seeded per station).
    smaller = plan_fleet(parse_scenario(BASE.replace("count = 40", "count = 5").encode(), "s"))
    by_id = {p.station_id: p for p in first}
    assert all(by_id[p.station_id] == p for p in smaller)
    other = plan_fleet(parse_scenario(BASE.replace("seed = 7", "seed = 8").encode(), "s.toml"))
    assert [p.faults for p in other] != [p.faults for p in first]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("count = 40", 'count = "many"', "s.toml: fleet[0].count: must be a whole number, not a"),
        ('site = "london"\n', 'site = "paris"\n', "fleet[0].site: no site 'paris' in [[sites]]"),
        (
            'firmware = "1.0.0"\nsessions',
            'firmware = "0.9.0"\nsessions',
            "fleet[0].firmware: '0.9.0' is not in releases.versions",
        ),
        ('release = "1.1.0"', 'release = "2.0.0"', "campaign.release: is not in releases"),
        ("probability = 0.5", "probability = 1.5", "faults.power_loss.probability: must be"),
        ('id = "tokyo"', 'id = "london"', "sites[1].id: site 'london' is listed twice"),
        ('"Asia/Tokyo"', '"Mars/Olympus"', "timezone"),
        ("link_drop =", "link_dorp =", "did you mean 'link_drop'?"),
        ("mean_minutes = 1.5", "mean_minutes = 0", "sessions.mean_minutes: needed with per_hour"),
        ('bad_release = "1.1.0"', 'bad_release = "3.0.0"', "faults.bad_release"),
        ("seed = 7", "seed = 7\nseed = 8", "s.toml"),
    ],
)
def test_bad_fields_are_refused_naming_file_and_field(old: str, new: str, message: str) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE
    with pytest.raises(ConfigError) as refused:
        parse_scenario(text.encode(), "s.toml")
    assert message in str(refused.value)
    assert str(refused.value).startswith("s.toml")


def test_an_unreadable_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*absent\.toml"):
        load_scenario(tmp_path / "absent.toml")
