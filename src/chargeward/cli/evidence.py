"""``chargeward evidence export``: the evidence pack of one release or one campaign::

    $ make test                      # pytest writes its JUnit report to reports/pytest.xml
    $ chargeward evidence export --release 1.2.0 --bundle acme-1.2.0.cwb \\
          --test-report reports/pytest.xml --key file:keys/evidence.key -o evidence-1.2.0 --zip
    $ chargeward evidence export --campaign ac22-1.2.0 --test-report reports/pytest.xml \\
          --key pkcs11:token=ops;object=evidence --commit "$(git rev-parse HEAD)" \\
          -o evidence-ac22-1.2.0
    $ chargeward evidence verify evidence-1.2.0.zip --key evidence.pub.pem
    $ chargeward evidence attacks --test-report reports/pytest.xml -o docs/security.md

The pack holds the release's signed files (and its supply-chain documents when the bundle
carries them), the approvals, the campaigns with per-station outcomes, the audit entries
with inclusion proofs against a signed checkpoint, and a requirements matrix whose results
come from the test report (:mod:`chargeward.evidence`).  Nothing is written unless all of it
could be gathered.  The report must name the commit it ran under (``tests/conftest.py`` writes
it): by default the commit of the checkout Chargeward runs from, else ``--commit``; a report
from another commit is refused unless ``--allow-other-commit``, and the pack then says so.
The pack is signed with ``--key`` (a key file or PKCS#11 URI; its passphrase from
``$CHARGEWARD_KEY_PASSPHRASE``, a token's PIN from ``$CHARGEWARD_PKCS11_PIN``).  ``verify``
checks the signature under a pinned public key, every file's digest and the matrix against
the pack's own report; it exits 3 with one line on any mismatch.  ``attacks`` renders the
attack catalogue (:mod:`chargeward.evidence.attacks`)
with each attack's latest result from the same report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from chargeward.cli.audit import progress_bar
from chargeward.cli.common import (
    DEFAULT_DATA_DIR,
    DataDir,
    ServerUrl,
    console,
    err_console,
    open_signer,
)
from chargeward.crypto.dsse import load_public_key
from chargeward.errors import ConfigError
from chargeward.evidence.attacks import render
from chargeward.evidence.bundle import read_bundle
from chargeward.evidence.matrix import JUnitReportError, merge_junit, parse_junit
from chargeward.evidence.pack import (
    Inputs,
    attack_catalogue,
    check_inputs,
    collect,
    read_pack,
    write_pack,
)
from chargeward.evidence.signing import verify_pack
from chargeward.evidence.testrun import package_checkout
from chargeward.fileio import read_capped, replace_file
from chargeward.limits import DEFAULT_FORMAT_LIMITS

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


def _commit(given: str | None) -> str:
    """The Chargeward commit the pack is about: ``--commit``, else this checkout's."""
    if given is not None:
        return given
    checkout = package_checkout()
    if checkout is None:
        raise ConfigError(
            "this Chargeward is not a git checkout: name the commit the tests ran under "
            "with --commit"
        )
    return checkout.commit


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
    key: Annotated[
        str | None,
        typer.Option("--key", help="Key URI that signs the pack (file: or pkcs11:)."),
    ] = None,
    commit: Annotated[
        str | None,
        typer.Option(
            "--commit", help="Chargeward commit the pack is about (default: this checkout's)."
        ),
    ] = None,
    allow_other_commit: Annotated[
        bool,
        typer.Option(
            "--allow-other-commit",
            help="Accept a report from another commit; the pack then says so.",
        ),
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Write the signed evidence pack of a release or a campaign (Markdown, HTML, JSON,
    proofs)."""
    from chargeward.cli.apiclient import ApiClient

    if (release is None) == (campaign is None):
        raise ConfigError("name exactly one of --release VERSION_OR_ID and --campaign ID")
    if key is None:
        raise ConfigError("name the key that signs the pack with --key URI (file: or pkcs11:)")
    kind, ref = ("release", release) if release is not None else ("campaign", campaign)
    assert ref is not None
    inputs = Inputs(
        kind,
        ref,
        _read_report(test_report),
        report_name=test_report[0].name,
        commit=_commit(commit),
        allow_other_commit=allow_other_commit,
    )
    tests = check_inputs(inputs)  # a bad report fails before the server is asked anything
    files = read_bundle(bundle) if bundle is not None else None
    if out.exists():
        raise ConfigError(f"{out} exists; choose another output directory or remove it")
    signer = open_signer(key, "evidence signing key")
    api = ApiClient(data_dir, server)
    with progress_bar() as progress:
        evidence = collect(api, inputs, files=files, progress=_RichProgress(progress))
        made = write_pack(evidence, out, signer, zip_too=zip_too)
    data = evidence.data
    summary, audit = data["tests"]["summary"], data["audit"]
    console.print(
        f"wrote {', '.join(str(p) for p in made)}, signed by {signer.uri}: "
        f"{summary['satisfied']} of {summary['requirements']} requirements satisfied, "
        f"{summary['manufacturer_to_evidence']} for the manufacturer to evidence; "
        f"{audit['proven']} audit entries proven",
        soft_wrap=True,
    )
    provenance = tests["report"]["provenance"]
    if not provenance["same_commit"]:
        err_console.print(
            f"warning: the test report is from commit {provenance['commit']}, not "
            f"{provenance['expected_commit']}; the pack says so",
            soft_wrap=True,
        )
    if provenance["dirty"] is not False:
        err_console.print(
            "warning: the tests ran on a modified (or unknown) tree; the pack says so",
            soft_wrap=True,
        )
    if audit["unproven"]:
        err_console.print(
            f"warning: {audit['unproven']} audit entries are newer than the latest signed "
            "checkpoint and carry no proof; export again after the next checkpoint",
            soft_wrap=True,
        )


@app.command("verify")
def verify(
    pack: Annotated[Path, typer.Argument(metavar="PACK", help="Pack directory or its zip.")],
    key: Annotated[
        list[Path],
        typer.Option("--key", help="The producer's public key (PEM), pinned; repeat for several."),
    ],
) -> None:
    """Check PACK's signature under a pinned key, every file's digest and its matrix against
    its own test report; exits 3 naming the first mismatch."""
    keys = [
        load_public_key(
            read_capped(path, DEFAULT_FORMAT_LIMITS.public_key_file_bytes, what="public key"),
            f"public key {path}",
        )
        for path in key
    ]
    checked = verify_pack(read_pack(pack), keys)
    subject = checked.subject
    what = (
        f"campaign {subject['campaign']['name']} of release {subject['version']}"
        if subject.get("campaign")
        else f"release {subject['version']}"
    )
    console.print(
        f"verified {pack}: {what}, {checked.files} files signed by key {checked.keyid}; "
        f"test report {checked.report_sha256} from commit {checked.report_commit}"
        + ("" if checked.same_commit else " (another commit than the pack's: see the pack)"),
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
