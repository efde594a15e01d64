"""A campaign across OCPP protocols: which target stations it can update, and how (ADR 0039).

One campaign may span OCPP 2.0.1 and 1.6J stations.  A 1.6 station that refused
SignedUpdateFirmware as not implemented (``stations.signed_update_support`` false) and that no
operator marked ``legacy_firmware_update`` cannot be sent anything: the campaign leaves it out
and says why.  A station marked legacy gets plain UpdateFirmware, and the campaign's answer
states the consequence (:data:`LEGACY_CONSEQUENCE`)::

    screen = await screen_protocols(s, ["CP-1", "CP-2"])
    screen.refused   # {"CP-2": "OCPP 1.6 without signed firmware update ..."}
    screen.legacy    # ("CP-1",)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.ocpp import csms16
from chargeward.server.store.tables import Station

LEGACY_CONSEQUENCE = (
    "a legacy OCPP 1.6 charger (no Security Whitepaper) gets plain UpdateFirmware, and "
    + csms16.LEGACY_CONSEQUENCE
)
NOT_MARKED = (
    "OCPP 1.6 without signed firmware update (it refused SignedUpdateFirmware) and not "
    "marked legacy_firmware_update: nothing can be sent to it until an operator marks it "
    f"({LEGACY_CONSEQUENCE})"
)


@dataclass(frozen=True)
class ProtocolScreen:
    """The target stations sorted by how they can be updated."""

    refused: Mapping[str, str] = field(default_factory=dict)  # station -> why left out
    legacy: tuple[str, ...] = ()  # plain UpdateFirmware (marked legacy)
    by_protocol: Mapping[str, int] = field(default_factory=dict)  # "2.0.1", "1.6", "unknown"

    def warnings(self) -> list[str]:
        """What the campaign's creator is told."""
        out = []
        if self.refused:
            names = ", ".join(sorted(self.refused)[:20])
            out.append(
                f"{len(self.refused)} target station{'' if len(self.refused) == 1 else 's'} "
                f"left out ({names}): {NOT_MARKED}"
            )
        if self.legacy:
            names = ", ".join(self.legacy[:20])
            out.append(
                f"{len(self.legacy)} station{'' if len(self.legacy) == 1 else 's'} marked "
                f"legacy get plain UpdateFirmware ({names}): {LEGACY_CONSEQUENCE}"
            )
        return out

    def audit_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"protocols": dict(self.by_protocol)}
        if self.refused:
            details["left_out_no_signed_update"] = sorted(self.refused)[:1000]
        if self.legacy:
            details["legacy_stations"] = list(self.legacy[:1000])
        return details


def update_path(version: str | None, marked: bool, signed: bool | None) -> str:
    """How a station can be sent a release: ``signed`` (OCPP 2.0.1, or 1.6 SignedUpdateFirmware,
    tried first when support is unknown), ``legacy`` (plain 1.6 UpdateFirmware: marked, and
    never showed signed-update support) or ``refused`` (refused SignedUpdateFirmware, not
    marked)."""
    if version != "1.6" or signed is True:
        return "signed"
    if marked:
        return "legacy"
    return "refused" if signed is False else "signed"


async def screen_protocols(s: AsyncSession, station_ids: Sequence[str]) -> ProtocolScreen:
    """Sort ``station_ids`` by protocol and update path."""
    wanted = set(station_ids)
    rows = (
        await s.execute(
            select(
                Station.id,
                Station.ocpp_version,
                Station.legacy_firmware_update,
                Station.signed_update_support,
            )
        )
    ).all()
    refused: dict[str, str] = {}
    legacy: list[str] = []
    protocols: Counter[str] = Counter()
    for sid, version, marked, signed in rows:
        if sid not in wanted:
            continue
        protocols[version or "unknown"] += 1
        path = update_path(version, bool(marked), signed)
        if path == "legacy":
            legacy.append(sid)
        elif path == "refused":
            refused[sid] = NOT_MARKED
    return ProtocolScreen(refused, tuple(sorted(legacy)), dict(sorted(protocols.items())))
