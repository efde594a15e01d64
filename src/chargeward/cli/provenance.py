"""``chargeward provenance``: create and verify signed build provenance; the rebuild check.

    $ chargeward release rebuild-check --command "make firmware" --source . \\
          --output build/firmware.bin --source-date-epoch 1700000000 --json rebuild.json
    $ chargeward provenance create --subject build/firmware.bin --subject acme-1.2.0.cwb \\
          --source-repo https://git.example/acme/fw --source-commit "$(git rev-parse HEAD)" \\
          --build-command "make firmware" --sbom sbom.cdx.json --rebuild-result rebuild.json \\
          --key file:keys/release.pem -o provenance.dsse.json
    $ chargeward provenance verify provenance.dsse.json --public-key release.pub.pem \\
          --subject build/firmware.bin --subject acme-1.2.0.cwb

Subjects are named by their file names.  The key's passphrase comes from
``$CHARGEWARD_KEY_PASSPHRASE`` (a token's PIN from ``$CHARGEWARD_PKCS11_PIN``) or a prompt.
``verify`` exits 3 when the provenance is refused; ``rebuild-check`` exits 3 when outputs
differ and 1 when a build fails, after writing ``--json`` in both cases.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from chargeward.cli.common import console, err_console, open_signer
from chargeward.cli.display import fields_table
from chargeward.crypto.dsse import load_public_key
from chargeward.errors import ConfigError
from chargeward.fileio import read_capped, refuse_existing, write_new_file
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.supply.provenance import (
    DEFAULT_BUILDER_ID,
    PAYLOAD_TYPE,
    ProvenanceInputs,
    Statement,
    Subject,
    create_provenance,
    subject_from_file,
    verify_provenance,
)
from chargeward.supply.rebuild import RebuildResult, RebuildStatus, rebuild_check

app = typer.Typer(no_args_is_help=True)

SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"

SubjectFiles = Annotated[
    list[Path],
    typer.Option(
        "--subject", help="A file the provenance is about (repeat for each).", dir_okay=False
    ),
]


def _subjects(files: list[Path]) -> list[Subject]:
    subjects = [subject_from_file(path) for path in files]
    names = [s.name for s in subjects]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two subjects are named {name!r}: subjects are named by file name")
    return subjects


def read_rebuild_result(path: Path) -> RebuildResult:
    """The JSON of ``release rebuild-check --json``, size-capped and checked."""
    data = read_capped(path, DEFAULT_FORMAT_LIMITS.rebuild_result_bytes, what="rebuild result")
    return RebuildResult.from_json(data, f"rebuild result {path}")


def _optional_subject(path: Path | None) -> Subject | None:
    return None if path is None else subject_from_file(path)


@app.command("create")
def create(
    subject: SubjectFiles,
    source_repo: Annotated[str, typer.Option("--source-repo", help="Source repository URL.")],
    source_commit: Annotated[
        str, typer.Option("--source-commit", help="Full git commit id of the source.")
    ],
    key: Annotated[str, typer.Option("--key", help="Release signing key URI.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Provenance file to create.", dir_okay=False)
    ],
    source_ref: Annotated[
        str | None, typer.Option("--source-ref", help="Git ref built, e.g. refs/tags/v1.2.0.")
    ] = None,
    build_command: Annotated[
        str | None, typer.Option("--build-command", help="The build command that was run.")
    ] = None,
    source_date_epoch: Annotated[
        int | None, typer.Option(envvar=SOURCE_DATE_EPOCH, min=0, help="Build timestamp.")
    ] = None,
    release_version: Annotated[
        str | None, typer.Option("--release-version", help="Release version.")
    ] = None,
    toolchain_digest: Annotated[
        str | None, typer.Option("--toolchain-digest", help="SHA-256 of the build toolchain.")
    ] = None,
    builder_id: Annotated[str, typer.Option("--builder-id", help="Builder id URI.")] = (
        DEFAULT_BUILDER_ID
    ),
    sbom: Annotated[Path | None, typer.Option("--sbom", help="The release's SBOM.")] = None,
    scan_report: Annotated[
        Path | None, typer.Option("--scan-report", help="The vulnerability-scan report.")
    ] = None,
    rebuild_result: Annotated[
        Path | None,
        typer.Option("--rebuild-result", help="JSON from 'release rebuild-check --json'."),
    ] = None,
) -> None:
    """Write signed SLSA provenance for the --subject files (never overwrites OUT)."""
    started = dt.datetime.now(dt.UTC)
    refuse_existing(out)
    rebuild = None
    if rebuild_result is not None:
        rebuild = read_rebuild_result(rebuild_result)
    inputs = ProvenanceInputs(
        subjects=tuple(_subjects(subject)),
        source_repo=source_repo,
        source_commit=source_commit.lower(),
        started_on=started,
        source_ref=source_ref,
        build_command=build_command,
        source_date_epoch=source_date_epoch,
        release_version=release_version,
        toolchain_digest=toolchain_digest.lower().removeprefix("sha256:")
        if toolchain_digest
        else None,
        builder_id=builder_id,
        sbom=_optional_subject(sbom),
        scan_report=_optional_subject(scan_report),
        rebuild=rebuild,
    )
    signer = open_signer(key, "release key")
    envelope = create_provenance(inputs, signer, clock=lambda: dt.datetime.now(dt.UTC))
    write_new_file(out, envelope.to_json())
    console.print(Text(f"Wrote {out}: {PAYLOAD_TYPE}, signed by {signer.uri}"), soft_wrap=True)
    console.print(fields_table([(s.name, s.sha256) for s in inputs.subjects], title="Subjects"))


def _statement_rows(statement: Statement) -> list[tuple[str, object]]:
    definition, run = statement.build_definition, statement.run_details
    source = definition["externalParameters"].get("source", {})
    rows: list[tuple[str, object]] = [
        ("Signed by key", statement.keyid),
        ("Builder", run["builder"].get("id", "?")),
        ("Build type", definition["buildType"]),
        ("Source", f"{source.get('repository', '?')} @ {source.get('commit', '?')}"),
    ]
    for byproduct in run.get("byproducts", []):
        if isinstance(byproduct, dict) and byproduct.get("name") == "rebuild-check":
            rows.append(("Rebuild check", byproduct.get("annotations", {}).get("result", "?")))
    rows += [(f"subject {s.name}", s.sha256) for s in statement.subjects]
    return rows


@app.command("verify")
def verify(
    provenance: Annotated[
        Path, typer.Argument(metavar="FILE", help="Provenance envelope (.dsse.json).")
    ],
    public_key: Annotated[
        list[Path],
        typer.Option("--public-key", help="Trusted release public key (PEM); repeat for several."),
    ],
    subject: SubjectFiles,
) -> None:
    """Verify FILE's signature and that it attests exactly the --subject files."""
    keys = [
        load_public_key(
            read_capped(path, DEFAULT_FORMAT_LIMITS.public_key_file_bytes, what="public key"),
            f"public key {path}",
        )
        for path in public_key
    ]
    data = read_capped(provenance, DEFAULT_FORMAT_LIMITS.dsse_envelope_bytes, what="provenance")
    statement = verify_provenance(data, keys, _subjects(subject))
    console.print(Text(f"verified: {provenance}"), style="bold green", soft_wrap=True)
    console.print(fields_table(_statement_rows(statement), title="Verified provenance"))


# --- chargeward release rebuild-check (registered in cli/release.py) ------------------------


def _epoch_from_git(source: Path) -> int | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "log", "-1", "--format=%ct"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return int(text) if done.returncode == 0 and text.isdigit() else None


def _source_date_epoch(given: int | None, source: Path) -> int:
    if given is not None:
        return given
    from_git = _epoch_from_git(source)
    if from_git is None:
        raise ConfigError(
            f"pass --source-date-epoch or set {SOURCE_DATE_EPOCH} "
            f"({source} is not a git checkout to take the last commit time from)"
        )
    return from_git


def _outputs_table(result: RebuildResult) -> Table:
    table = Table(title=Text(f"Rebuild check: {result.status.value}"))
    for column in ("output", "build 1 SHA-256", "build 2 SHA-256", "same"):
        table.add_column(column, overflow="fold")
    for o in result.outputs:
        table.add_row(Text(o.path), Text(o.first), Text(o.second), "yes" if o.same else "NO")
    return table


def run_rebuild_check(
    command: str,
    source: Path,
    outputs: list[str],
    source_date_epoch: int | None,
    timeout: float,
    json_out: Path | None,
) -> None:
    """``release rebuild-check``: build twice, show the comparison, exit non-zero on failure."""
    if json_out is not None:
        refuse_existing(json_out)
    epoch = _source_date_epoch(source_date_epoch, source)
    with console.status(Text("Starting the rebuild check")) as status:
        result = rebuild_check(
            command,
            source,
            outputs,
            epoch,
            timeout,
            progress=lambda message: status.update(Text(message)),
        )
    if json_out is not None:
        write_new_file(json_out, result.to_json())
    if result.outputs:
        console.print(_outputs_table(result))
    if result.status is RebuildStatus.REPRODUCIBLE:
        console.print(Text(f"reproducible: {len(result.outputs)} output(s) identical"))
        return
    if result.failure is not None:
        failure = result.failure
        err_console.print(
            Text(f"error: build {failure.build} failed: {failure.reason}"), soft_wrap=True
        )
        if failure.stderr_tail:
            err_console.print(Text(failure.stderr_tail), soft_wrap=True)
        raise typer.Exit(1)
    names = ", ".join(o.path for o in result.differing)
    err_console.print(Text(f"error: not reproducible: {names} differ"), soft_wrap=True)
    raise typer.Exit(3)
