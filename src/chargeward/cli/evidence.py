"""``chargeward evidence export``: the evidence pack of one release or one campaign::

    $ make test                      # pytest writes its JUnit report to reports/pytest.xml
    $ chargeward evidence export --release 1.2.0 --bundle acme-1.2.0.cwb \\
          --test-report reports/pytest.xml -o evidence-1.2.0 --zip
    $ chargeward evidence export --campaign ac22-1.2.0 --test-report reports/pytest.xml \\
          -o evidence-ac22-1.2.0
    $ chargeward evidence attacks --test-report reports/pytest.xml -o docs/security.md

The pack holds the release's signed files (and its supply-chain documents when the bundle
carries them), the approvals, the campaigns with per-station outcomes, the audit entries
with inclusion proofs against a signed checkpoint, and a requirements matrix whose results
come from the test report (:mod:`chargeward.evidence`).  Nothing is written unless all of it
could be gathered.  ``attacks`` renders the attack catalogue (:mod:`chargeward.evidence.attacks`)
with each attack's latest result from the same report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from chargeward.cli.audit import progress_bar
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console, err_console
from chargeward.errors import ConfigError
from chargeward.evidence.attacks import render
from chargeward.evidence.bundle import read_bundle
from chargeward.evidence.matrix import JUnitReportError, merge_junit, parse_junit
from chargeward.evidence.pack import Inputs, attack_catalogue, check_inputs, collect, write_pack
from chargeward.fileio import replace_file

app = typer.Typer(no_args_is_help=True)


class _RichProgress:
    """The pack's progress protocol on a rich progress bar (stderr, transient)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=None)

    def stage(self, what: str, total: int | None = None) -> None:
        self.progress.update(self.task, description=what, total=total, completed=0)

    def advance(self) -> None:
        self.progress.advance(self.task)


def _read_report(paths: list[Path]) -> bytes:
    """The reports named, merged into one (``make test`` and ``make test-slow`` write two)."""
    data = []
    for path in paths:
        try:
            data.append(path.read_bytes())
        except OSError as e:
            raise JUnitReportError(f"cannot read test report {path}: {e.strerror}") from e
    return merge_junit(data)


REPORT_HELP = "JUnit XML report of the test run (pytest --junitxml); repeat to merge several."


@app.command("export")
def export(
    test_report: Annotated[list[Path], typer.Option("--test-report", help=REPORT_HELP)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the pack to this new directory.")],
    release: Annotated[
        str | None, typer.Option("--release", help="The release: version, id or id prefix.")
    ] = None,
    campaign: Annotated[
        str | None, typer.Option("--campaign", help="The campaign: id or name.")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="The release bundle (.cwb): its supply-chain documents."),
    ] = None,
    zip_too: Annotated[
        bool, typer.Option("--zip", help="Also write DIR.zip beside it (deterministic).")
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Write the evidence pack of a release or a campaign (Markdown, HTML, JSON, proofs)."""
    from chargeward.cli.apiclient import ApiClient

    if (release is None) == (campaign is None):
        raise ConfigError("name exactly one of --release VERSION_OR_ID and --campaign ID")
    kind, ref = ("release", release) if release is not None else ("campaign", campaign)
    assert ref is not None
    inputs = Inputs(kind, ref, _read_report(test_report), report_name=test_report[0].name)
    check_inputs(inputs)  # a bad report fails before the server is asked anything
    files = read_bundle(bundle) if bundle is not None else None
    if out.exists():
        raise ConfigError(f"{out} exists; choose another output directory or remove it")
    api = ApiClient(data_dir, server)
    with progress_bar() as progress:
        evidence = collect(api, inputs, files=files, progress=_RichProgress(progress))
        made = write_pack(evidence, out, zip_too=zip_too)
    data = evidence.data
    tests, audit = data["tests"]["summary"], data["audit"]
    console.print(
        f"wrote {', '.join(str(p) for p in made)}: {tests['satisfied']} of "
        f"{tests['requirements']} requirements satisfied; {audit['proven']} audit entries "
        "proven",
        soft_wrap=True,
    )
    if audit["unproven"]:
        err_console.print(
            f"warning: {audit['unproven']} audit entries are newer than the latest signed "
            "checkpoint and carry no proof; export again after the next checkpoint",
            soft_wrap=True,
        )


@app.command("attacks")
def attacks(
    test_report: Annotated[list[Path], typer.Option("--test-report", help=REPORT_HELP)],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Write the Markdown here (replaced if present).")
    ] = Path("docs/security.md"),
) -> None:
    """Render the attack catalogue with each attack's result from the test report."""
    catalogue = attack_catalogue()
    names = " + ".join(p.name for p in test_report)
    markdown = render(catalogue, parse_junit(_read_report(test_report)), names)
    replace_file(out, markdown.encode())
    console.print(
        f"wrote {out}: {len(catalogue.attacks)} attacks in {len(catalogue.classes)} classes",
        soft_wrap=True,
    )
