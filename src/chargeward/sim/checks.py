"""What a finished simulation must show, checked against the server's records and the flash.

- every station runs a verified image (the bootloader's check of the active slot, on flash);
- the campaign's counts add up to the stations it targeted;
- no station started installing (its ``Installing`` status, as the server received it)
  outside its site's maintenance windows or while an EV was charging on it;
- the server saw each station speak the OCPP version it was made with, and marked legacy
  exactly the 1.6 stations the operator marked (``protocols``: stations by what the server
  recorded: version, legacy mark, signed update shown; see :func:`server_protocol`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from chargeward.model.fleet import in_window, parse_windows
from chargeward.sim.scenario import Site
from chargeward.sim.server import call
from chargeward.sim.station import Session, SimStation

PARALLEL = 16


@dataclass
class Checks:
    unverified: list[str] = field(default_factory=list)
    counts_total: int = 0
    targeted: int = 0
    outside_window: list[str] = field(default_factory=list)
    during_session: list[str] = field(default_factory=list)
    installs_seen: int = 0
    protocols: dict[str, int] = field(default_factory=dict)  # server_protocol -> stations
    protocol_mismatch: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.unverified
            and self.counts_total == self.targeted
            and not self.outside_window
            and not self.during_session
            and not self.protocol_mismatch
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "unverified": self.unverified,
            "counts_total": self.counts_total,
            "targeted": self.targeted,
            "installs_seen": self.installs_seen,
            "outside_window": self.outside_window,
            "during_session": self.during_session,
            "protocols": dict(sorted(self.protocols.items())),
            "protocol_mismatch": self.protocol_mismatch,
        }


def server_protocol(detail: Mapping[str, Any]) -> str:
    """A station's protocol as the server recorded it (``GET /api/v1/stations/{id}``).

    >>> server_protocol({"ocpp_version": "1.6", "signed_update_support": True})
    '1.6, signed update shown'
    >>> server_protocol({"ocpp_version": "1.6", "legacy_firmware_update": True})
    '1.6, marked legacy'
    """
    label = str(detail.get("ocpp_version"))
    if detail.get("legacy_firmware_update"):
        label += ", marked legacy"
    support = detail.get("signed_update_support")
    if support is not None:
        label += ", signed update shown" if support else ", signed update refused"
    return label


def protocol_mismatch(st: SimStation, detail: Mapping[str, Any]) -> str | None:
    """What the server recorded of ``st``'s protocol and legacy mark, when it is not what the
    station was made with (and marked with)."""
    seen = detail.get("ocpp_version")
    marked = bool(detail.get("legacy_firmware_update"))
    want = st.plan.ocpp
    if seen == want.version and marked == want.to_mark:
        return None
    return (
        f"{st.plan.station_id}: speaks {want.label}, server saw OCPP {seen}"
        f"{', marked legacy' if marked else ''}"
    )


def _installing_times(detail: Mapping[str, Any]) -> list[dt.datetime]:
    return [
        dt.datetime.fromisoformat(s["received_at"]).astimezone(dt.UTC)
        for s in detail["firmware_statuses"]
        if s["status"] == "Installing"
    ]


def violations(
    station_id: str,
    installing: Sequence[dt.datetime],
    site: Site,
    sessions: Sequence[Session],
    now: dt.datetime,
) -> tuple[list[str], list[str]]:
    """The installs that began outside the site's windows, and those during a session (one
    still open counts up to ``now``)."""
    windows = parse_windows(site.windows)
    outside, during = [], []
    for t in installing:
        if not in_window(windows, site.timezone, t):
            outside.append(f"{station_id} at {t.isoformat()}")
        if any(s.start <= t <= (s.end or now) for s in sessions):
            during.append(f"{station_id} at {t.isoformat()}")
    return outside, during


async def check_run(
    api: httpx.AsyncClient,
    stations: Sequence[SimStation],
    sites: Mapping[str, Site],
    campaign: Mapping[str, Any],
    targeted: int,
) -> Checks:
    checks = Checks(targeted=targeted, counts_total=sum(campaign["counts"].values()))
    checks.unverified = [
        st.plan.station_id for st in stations if st.flash.verified_version() is None
    ]
    gate = asyncio.Semaphore(PARALLEL)

    async def one(st: SimStation) -> None:
        async with gate:
            detail = await call(api, "GET", f"/api/v1/stations/{st.plan.station_id}")
        times = _installing_times(detail)
        checks.installs_seen += len(times)
        outside, during = violations(
            st.plan.station_id, times, sites[st.plan.site], st.record.sessions, now
        )
        checks.outside_window += outside
        checks.during_session += during
        seen = server_protocol(detail)
        checks.protocols[seen] = checks.protocols.get(seen, 0) + 1
        if (wrong := protocol_mismatch(st, detail)) is not None:
            checks.protocol_mismatch.append(wrong)

    now = dt.datetime.now(dt.UTC)
    await asyncio.gather(*(one(st) for st in stations))
    return checks
