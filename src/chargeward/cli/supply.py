"""``chargeward supply``: SBOMs and the offline vulnerability gate for a release.

    $ chargeward supply sbom components.toml --release-digest 9f2c... -o sbom.cdx.json
    $ chargeward supply validate-sbom sbom.cdx.json
    $ chargeward supply scan components.toml --advisories osv/ --allowlist allowlist.toml \\
          --fail-on high --report vulnerability-report.json --vex vex.openvex.json
    $ chargeward supply check-pinned components.toml --previous ../4.1.0/components.toml

``scan`` prints every finding and exits 3 when the gate refuses the release (the report and
VEX document are still written, as the record of the refusal); bad input exits 6 and writes
nothing.  Output files are never overwritten.
"""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from chargeward.cli.common import console
from chargeward.fileio import refuse_existing, write_new_file
from chargeward.supply.advisories import load_advisories
from chargeward.supply.allowlist import Allowlist, load_allowlist
from chargeward.supply.components import check_pinned, load_components
from chargeward.supply.gate import GateResult, evaluate, report_json
from chargeward.supply.sbom import build_sbom, read_sbom, sbom_components, validate_sbom
from chargeward.supply.severity import Severity
from chargeward.supply.vex import openvex

app = typer.Typer(no_args_is_help=True)


class FailOn(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


ComponentsPath = Annotated[
    Path,
    typer.Argument(
        metavar="COMPONENTS", help="Component list (TOML, or JSON if *.json).", dir_okay=False
    ),
]


@app.command("sbom")
def sbom(
    components: ComponentsPath,
    release_digest: Annotated[
        str, typer.Option("--release-digest", help="Release digest (64 hex): the serial number.")
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="SBOM to create.", dir_okay=False)],
) -> None:
    """Write the CycloneDX 1.6 SBOM of a release (timestamp from SOURCE_DATE_EPOCH)."""
    refuse_existing(out)
    data = build_sbom(load_components(components), release_digest.lower())
    write_new_file(out, data)
    console.print(Text(f"wrote {out}: CycloneDX 1.6, valid"), soft_wrap=True)


@app.command("validate-sbom")
def validate(
    sbom_file: Annotated[Path, typer.Argument(metavar="FILE", help="CycloneDX 1.6 JSON SBOM.")],
) -> None:
    """Validate an SBOM against the CycloneDX 1.6 JSON schema (strict)."""
    data = read_sbom(sbom_file)
    validate_sbom(data, str(sbom_file))
    count = len(sbom_components(data, str(sbom_file)))
    console.print(Text(f"valid: {sbom_file} (CycloneDX 1.6, {count} components with a purl)"))


@app.command("check-pinned")
def pinned(
    components: ComponentsPath,
    previous: Annotated[
        Path, typer.Option("--previous", help="The previous release's component list.")
    ],
) -> None:
    """Refuse if a component pinned in the previous release changed (exit 3)."""
    current = load_components(components)
    check_pinned(current, previous=load_components(previous))
    kept = [c.name for c in current.components if c.pinned]
    console.print(Text(f"pinned components unchanged: {', '.join(kept) or 'none'}"))


def findings_table(result: GateResult) -> Table:
    table = Table(title=Text(f"{result.release} {result.version}: findings"))
    for column in ("advisory", "package", "component", "severity", "status", "decision"):
        table.add_column(column, overflow="fold")
    for f in result.findings:
        if f.accepted_by is not None:
            decision = Text(f"accepted ({f.accepted_by.ref}, {f.accepted_by.status})", "green")
        elif f.blocking:
            expired = f" ({f.expired_entry.ref} expired)" if f.expired_entry else ""
            decision = Text(f"BLOCKS{expired}", "bold red")
        else:
            decision = Text(f"below fail-on {result.threshold.label}", "yellow")
        table.add_row(
            Text(f.advisory),
            Text(f.purl),
            Text(f.component),
            Text(f.severity.label),
            Text(f"{f.status}: {f.reason}"),
            decision,
        )
    return table


@app.command("scan")
def scan(
    components: ComponentsPath,
    advisories: Annotated[
        Path, typer.Option("--advisories", help="Directory of OSV advisories (*.json, any depth).")
    ],
    allowlist: Annotated[
        Path | None, typer.Option("--allowlist", help="Accepted risks (TOML or JSON).")
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Block findings of this severity and above.")
    ] = FailOn.high,
    min_approvers: Annotated[
        int, typer.Option("--min-approvers", min=1, help="Approvers each accepted risk needs.")
    ] = 1,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the JSON scan report here.")
    ] = None,
    vex: Annotated[
        Path | None, typer.Option("--vex", help="Write accepted findings as OpenVEX here.")
    ] = None,
    author: Annotated[
        str | None, typer.Option("--author", help="VEX author (default: the supplier).")
    ] = None,
) -> None:
    """Check every component and library against offline OSV advisories."""
    for out in (report, vex):
        if out is not None:
            refuse_existing(out)
    release = load_components(components)
    accepted = load_allowlist(allowlist, min_approvers=min_approvers) if allowlist else Allowlist()
    advisory_set = load_advisories(advisories)
    result = evaluate(
        release, advisory_set, accepted, Severity[fail_on.name.upper()], dt.datetime.now(dt.UTC)
    )
    outputs = []
    if report is not None:
        outputs.append((report, report_json(result)))
    if vex is not None:
        outputs.append((vex, openvex(result, author=author or release.supplier)))
    for path, data in outputs:
        write_new_file(path, data)
    console.print(findings_table(result))
    console.print(
        Text(
            f"{result.packages_checked} packages checked against {result.advisory_count} "
            f"advisories (set sha256:{result.advisory_digest[:16]}...); "
            f"{len(result.findings)} findings, {len(result.accepted)} accepted, "
            f"{len(result.blocking)} blocking"
        ),
        soft_wrap=True,
    )
    for ref in result.unused_entries:
        console.print(Text(f"note: {accepted.source}: {ref} matches no finding"), soft_wrap=True)
    result.raise_if_refused()
    console.print(Text(f"passed: {result.release} {result.version}", "bold green"))
