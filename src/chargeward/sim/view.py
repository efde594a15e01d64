"""The live progress view and the final summary table of a simulation (rich)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from chargeward.sim.protocols import protocol_cell
from chargeward.sim.station import SimStation


def snapshot(
    stations: Sequence[SimStation], campaign: Mapping[str, Any] | None, elapsed: float
) -> dict[str, Any]:
    """What the fleet is doing now: connections and versions from the agents, phases from
    the campaign."""
    versions = Counter(st.version or "-" for st in stations)
    return {
        "elapsed_s": round(elapsed, 1),
        "stations": len(stations),
        "connected": sum(st.online for st in stations),
        "versions": dict(sorted(versions.items())),
        "power_cuts": sum(len(st.record.power_cuts) for st in stations),
        "campaign": None
        if campaign is None
        else {
            "status": campaign["status"],
            "stage": campaign["stage"],
            "counts": {k: v for k, v in campaign["counts"].items() if v},
            "deferred_charging": campaign["deferred_charging"],
        },
    }


def live(snap: Mapping[str, Any], link_stats: Mapping[str, int], title: str = "") -> Group:
    heading = f"{title}: " if title else ""
    t = Table(title=f"{heading}simulated fleet, {snap['elapsed_s']:.0f} s", min_width=60)
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("connected", f"{snap['connected']} / {snap['stations']}")
    for version, n in snap["versions"].items():
        t.add_row(f"running {version}", str(n))
    c = snap["campaign"]
    if c is not None:
        t.add_row("campaign", f"{c['status']} (stage {c['stage']})")
        for state, n in c["counts"].items():
            t.add_row(f"  {state}", str(n))
        t.add_row("  deferred: charging", str(c["deferred_charging"]))
    t.add_row("power cuts", str(snap["power_cuts"]))
    for name, n in sorted(link_stats.items()):
        t.add_row(f"link: {name}", str(n))
    return Group(t)


def summary_table(summary: Mapping[str, Any]) -> Group:
    t = Table(title="simulation summary")
    t.add_column("measurement")
    t.add_column("value", justify="right")
    c = summary["campaign"]
    rows = [
        ("stations", summary["stations"]),
        ("wall time", f"{summary['wall_s']:.1f} s"),
        ("campaign", f"{c['status']} ({c.get('pause_reason') or 'no pause'})"),
        *((f"  {k}", v) for k, v in c["counts"].items() if v),
        ("final versions (verified on flash)", summary["final_versions"]),
        *((f"OCPP {label}", protocol_cell(row)) for label, row in summary["protocols"].items()),
        ("power cuts", summary["faults"]["power_cuts"]),
        *((f"link: {k}", v) for k, v in summary["faults"]["link"].items()),
        ("sessions (refused)", f"{summary['sessions']} ({summary['refused_sessions']})"),
        ("sim memory per station", f"{summary['memory']['per_station_kib']:.0f} KiB"),
        ("server CPU per station", f"{summary['server_cpu_ms_per_station']:.1f} ms"),
    ]
    for name, value in rows:
        t.add_row(name, str(value))
    checks = summary.get("checks")
    verdict = Text("checks: not run")
    if checks is not None:
        verdict = Text(
            f"checks: {'all passed' if checks['ok'] else 'FAILED'} "
            f"({checks['installs_seen']} installs against windows and sessions)",
            style="green" if checks["ok"] else "bold red",
        )
    return Group(t, verdict)
