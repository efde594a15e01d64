"""A scenario's OCPP mix: a site's protocol is its groups' default, a group may say its own,
legacy (1.6 without the Security Whitepaper) is 1.6 only and marked by the simulator unless
the scenario says not to; every bad value is refused with the file and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargeward.errors import ConfigError
from chargeward.sim.plan import plan_fleet
from chargeward.sim.scenario import Ocpp, load_scenario, parse_scenario

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "sim"

BASE = """seed = 1
[releases]
versions = ["1.0.0", "1.1.0"]
[campaign]
release = "1.1.0"
[[sites]]
id = "new"
timezone = "UTC"
[[sites]]
id = "old"
timezone = "UTC"
SITE
[[fleet]]
count = 2
site = "new"
firmware = "1.0.0"
[[fleet]]
count = 4
site = "old"
firmware = "1.0.0"
GROUP
"""


def parse(site: str = 'ocpp = "1.6"', group: str = "") -> list[Ocpp]:
    s = parse_scenario(BASE.replace("SITE", site).replace("GROUP", group).encode(), "m.toml")
    return [g.ocpp for g in s.fleet]


def test_without_ocpp_keys_every_charger_speaks_2_0_1() -> None:
    assert parse(site="") == [Ocpp(), Ocpp()]


def test_a_sites_protocol_is_its_groups_default_and_a_group_may_be_legacy() -> None:
    assert parse() == [Ocpp("2.0.1"), Ocpp("1.6")]
    assert parse(group="legacy_firmware_update = true") == [Ocpp(), Ocpp("1.6", legacy=True)]
    unmarked = parse(group="legacy_firmware_update = true\nmark_legacy = false")[1]
    assert unmarked.label == "1.6 legacy (unmarked)" and not unmarked.to_mark
    assert parse(site="", group='ocpp = "1.6"')[1] == Ocpp("1.6")


def test_plans_and_a_scaled_fleet_keep_each_groups_protocol() -> None:
    s = parse_scenario(BASE.replace("SITE", 'ocpp = "1.6"').replace("GROUP", "").encode(), "m.toml")
    plans = plan_fleet(s.scaled(12))
    assert [p.ocpp.label for p in plans].count("1.6 whitepaper") == 8
    assert [p.ocpp.label for p in plans].count("2.0.1") == 4


@pytest.mark.parametrize(
    ("site", "group", "error"),
    [
        ('ocpp = "2.0"', "", "sites[1].ocpp: must be one of '2.0.1', '1.6'"),
        ("", "ocpp = 1.6", "fleet[1].ocpp: must be one of '2.0.1', '1.6'"),
        (
            "",
            "legacy_firmware_update = true",
            "fleet[1].legacy_firmware_update: needs ocpp",
        ),
        ('ocpp = "1.6"', 'legacy_firmware_update = "yes"', "must be true or false"),
        (
            'ocpp = "1.6"',
            "mark_legacy = false",
            "fleet[1].mark_legacy: needs legacy",
        ),
        ("legacy_firmware_update = true", "", "sites[1]"),  # a group's key, not a site's
    ],
)
def test_bad_ocpp_keys_are_refused_with_the_field(site: str, group: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(site=site, group=group)
    assert error in str(e.value)


def test_the_shipped_mixed_fleet_example_parses() -> None:
    s = load_scenario(EXAMPLES / "ocpp-mix.toml")
    assert [p.ocpp.label for p in plan_fleet(s)].count("1.6 legacy") == 2
