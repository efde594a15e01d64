"""``chargeward release``: build, verify, inspect and upload release bundles.

    $ chargeward release build --image firmware.bin --version 1.2.0 --security-version 3 \\
          --model AC22 --signing-key file:keys/signing.pem --signing-cert signing.pem \\
          --out acme-1.2.0.cwb
    $ chargeward release verify acme-1.2.0.cwb --root root.pem
    $ chargeward release show acme-1.2.0.cwb

``verify`` exits 0 only if every check passes; a refusal on trust grounds exits 3 and a
malformed bundle 6, each with a one-line reason.  ``approve`` and ``publish`` are in
:mod:`chargeward.cli.release_approval`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import (
    DEFAULT_DATA_DIR,
    DataDir,
    ServerUrl,
    console,
    open_signer,
    record_audit,
)
from chargeward.cli.display import fields_table
from chargeward.cli.provenance import read_rebuild_result, run_rebuild_check
from chargeward.cli.release_approval import approve, publish
from chargeward.cli.supply import FailOn, findings_table
from chargeward.cli.vendor import upload_vendor
from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import load_certificate, load_certificate_file, load_certificates_file
from chargeward.crypto.signature import sha256_file
from chargeward.errors import ChargewardError, ConfigError
from chargeward.fileio import refuse_existing, write_new_file
from chargeward.model.reported import parse_option
from chargeward.release.bundle import (
    SBOM_NAME,
    SCAN_REPORT_NAME,
    Manifest,
    VerifiedBundle,
    build_bundle,
    read_manifest,
    verify_bundle,
)
from chargeward.supply.advisories import load_advisories
from chargeward.supply.allowlist import Allowlist, load_allowlist
from chargeward.supply.attest import documents_for
from chargeward.supply.components import ComponentList, check_pinned, load_components
from chargeward.supply.gate import evaluate
from chargeward.supply.provenance import (
    BUNDLE_SUBJECT,
    ProvenanceInputs,
    Subject,
    create_provenance,
)
from chargeward.supply.severity import Severity

app = typer.Typer(no_args_is_help=True)

BundlePath = Annotated[Path, typer.Argument(metavar="BUNDLE", help="Release bundle (.cwb).")]


def _manifest_rows(manifest: Manifest) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("Release id", manifest.release_id),
        ("Version", manifest.version),
        ("Security version", manifest.security_version),
        ("Hardware models", ", ".join(manifest.hardware_models)),
        ("Release class", manifest.release_class),
        ("Customer", manifest.customer or "any"),
        ("Created", manifest.created),
    ]
    if manifest.notes:
        rows.append(("Notes", manifest.notes))
    for image in manifest.images:
        rows += [
            (f"{image.component}: file", image.path),
            (f"{image.component}: SHA-256", image.sha256),
            (f"{image.component}: length", f"{image.length} bytes"),
        ]
    for attestation in manifest.attestations:
        rows.append((attestation.name, f"SHA-256 {attestation.sha256}"))
    return rows


def _supply_documents(
    components: Path,
    advisories: Path | None,
    allowlist: Path | None,
    fail_on: FailOn,
    min_approvers: int,
    previous: Path | None,
) -> tuple[ComponentList, dict[str, bytes]]:
    """Gate the declared components; the SBOM, scan report and VEX the bundle will carry."""
    if advisories is None:
        raise ConfigError(
            "--components needs --advisories: a release's SBOM is always scanned "
            "(point it at a directory of OSV advisories)"
        )
    declared = load_components(components)
    if previous is not None:  # certified (pinned) components must not change
        check_pinned(declared, previous=load_components(previous))
    accepted = load_allowlist(allowlist, min_approvers=min_approvers) if allowlist else Allowlist()
    with console.status(Text(f"Scanning {declared.name} {declared.version}")):
        gate = evaluate(
            declared,
            load_advisories(advisories),
            accepted,
            Severity[fail_on.name.upper()],
            dt.datetime.now(dt.UTC),
        )
    console.print(findings_table(gate))
    gate.raise_if_refused()
    return declared, documents_for(declared, gate)


def _images(
    image: Path | None, component: str, declared: ComponentList | None, components: Path | None
) -> Path | dict[str, Path]:
    images: dict[str, Path] = {}
    if declared is not None and components is not None:
        images = {
            c.name: components.parent / c.image for c in declared.components if c.image is not None
        }
    if image is not None:
        if component in images:
            raise ConfigError(f"--image names component {component!r}, which {components} has")
        images[component] = image
    if not images:
        raise ConfigError("give --image, or a --components list whose components name images")
    return images


@app.command("build")
def build(
    model: Annotated[
        list[str], typer.Option("--model", help="Hardware model (repeat for several).")
    ],
    signing_key: Annotated[str, typer.Option("--signing-key", help="Signing key URI.")],
    signing_cert: Annotated[
        Path, typer.Option("--signing-cert", help="Firmware-signing certificate (PEM).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle to create (.cwb).", dir_okay=False)],
    security_version: Annotated[
        int, typer.Option("--security-version", min=0, help="Anti-rollback counter.")
    ],
    image: Annotated[
        Path | None, typer.Option("--image", help="Raw firmware payload (of --component).")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Firmware version, e.g. 1.2.0 (default: --components')."),
    ] = None,
    component: Annotated[str, typer.Option("--component", help="Image component.")] = "main",
    notes: Annotated[str, typer.Option("--notes", help="Release notes.")] = "",
    release_class: Annotated[
        str, typer.Option("--class", help="Release class: security or feature.")
    ] = "feature",
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only chargers of this customer may install.")
    ] = None,
    components: Annotated[
        Path | None,
        typer.Option(
            "--components",
            help="Component list (TOML/JSON): each component with an image becomes one image "
            "of the release; the SBOM, scan report and VEX go into the bundle.",
            dir_okay=False,
        ),
    ] = None,
    advisories: Annotated[
        Path | None, typer.Option("--advisories", help="Directory of OSV advisories (offline).")
    ] = None,
    allowlist: Annotated[
        Path | None, typer.Option("--allowlist", help="Accepted risks (TOML or JSON).")
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Refuse findings of this severity and above.")
    ] = FailOn.high,
    min_approvers: Annotated[
        int, typer.Option("--min-approvers", min=1, help="Approvers each accepted risk needs.")
    ] = 1,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="The previous release's component list: refuse if a pinned component changed.",
            dir_okay=False,
        ),
    ] = None,
    provenance: Annotated[
        Path | None,
        typer.Option(
            "--provenance",
            help="Also write signed SLSA provenance (DSSE) for the images and the bundle here.",
            dir_okay=False,
        ),
    ] = None,
    source_repo: Annotated[
        str | None, typer.Option("--source-repo", help="Source repository URL (provenance).")
    ] = None,
    source_commit: Annotated[
        str | None, typer.Option("--source-commit", help="Git commit built (provenance).")
    ] = None,
    source_ref: Annotated[
        str | None, typer.Option("--source-ref", help="Git ref built (provenance).")
    ] = None,
    build_command: Annotated[
        str | None, typer.Option("--build-command", help="The build command (provenance).")
    ] = None,
    rebuild_result: Annotated[
        Path | None,
        typer.Option(
            "--rebuild-result",
            help="JSON of `release rebuild-check --json`, recorded in the provenance.",
            dir_okay=False,
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Gate, pack, sign and write a release bundle (never overwrites OUT)."""
    started = dt.datetime.now(dt.UTC)
    refuse_existing(out)
    if provenance is not None:
        refuse_existing(provenance)
        if not source_repo or not source_commit:
            raise ConfigError("--provenance needs --source-repo and --source-commit")
    elif rebuild_result is not None:
        raise ConfigError("--rebuild-result is recorded in the provenance: give --provenance too")
    rebuild = read_rebuild_result(rebuild_result) if rebuild_result is not None else None
    certificate = load_certificate_file(signing_cert)
    declared, made = (
        _supply_documents(components, advisories, allowlist, fail_on, min_approvers, previous)
        if components is not None
        else (None, None)
    )
    if declared is not None:
        if version is not None and version != declared.version:
            raise ConfigError(f"--version {version} differs from {components}'s {declared.version}")
        version = declared.version
    if version is None:
        raise ConfigError("give --version (or a --components list, which names it)")
    payload = _images(image, component, declared, components)
    signer = open_signer(signing_key, "signing key")
    with console.status(Text(f"Packing and signing {version}")):
        manifest = build_bundle(
            payload,
            out,
            version=version,
            security_version=security_version,
            hardware_models=model,
            signer=signer,
            signing_certificate=certificate,
            component=component,
            notes=notes,
            release_class=release_class,
            customer=customer,
            attestations=made,
        )
    details: dict[str, Any] = {
        "version": version,
        "security_version": security_version,
        "hardware_models": sorted(model),
        "signing_key": signer.uri,
        "images": {i.component: i.sha256 for i in manifest.images},
        "attestations": {a.name: a.sha256 for a in manifest.attestations},
        "bundle": str(out),
    }
    if provenance is not None and source_repo and source_commit:  # both checked above
        details["provenance"] = _write_provenance(
            provenance,
            out,
            manifest,
            signer,
            ProvenanceInputs(
                subjects=(),
                source_repo=source_repo,
                source_commit=source_commit.lower(),
                started_on=started,
                source_ref=source_ref,
                build_command=build_command,
                release_version=version,
                sbom=_document_subject(manifest, SBOM_NAME),
                scan_report=_document_subject(manifest, SCAN_REPORT_NAME),
                rebuild=rebuild,
            ),
        )
    record_audit(data_dir, "release.build", manifest.release_id, details)
    console.print(Text(f"Built {out}: release id {manifest.release_id}"), soft_wrap=True)
    rows = _manifest_rows(manifest)
    rows.append(("Signed by", certificate.subject.rfc4514_string()))
    console.print(fields_table(rows))


def _document_subject(manifest: Manifest, name: str) -> Subject | None:
    listed = manifest.attestation(name)
    return Subject(name, listed.sha256) if listed is not None else None


def _write_provenance(
    path: Path, bundle: Path, manifest: Manifest, signer: Signer, inputs: ProvenanceInputs
) -> str:
    """Sign provenance naming every image (``images/<component>.cwfw``) and the bundle."""
    subjects = [Subject(i.path, i.sha256) for i in manifest.images]
    subjects.append(Subject(BUNDLE_SUBJECT, sha256_file(bundle).sha256))
    inputs = dataclasses.replace(inputs, subjects=tuple(subjects))
    envelope = create_provenance(inputs, signer, clock=lambda: dt.datetime.now(dt.UTC))
    data = envelope.to_json()
    write_new_file(path, data)
    console.print(Text(f"Wrote provenance {path} ({len(subjects)} subjects)"), soft_wrap=True)
    return hashlib.sha256(data).hexdigest()


@app.command("verify")
def verify(
    bundle: BundlePath,
    root: Annotated[
        list[Path],
        typer.Option("--root", help="Trusted Manufacturer Root CA (PEM); repeat for several."),
    ],
) -> None:
    """Verify BUNDLE completely against the given roots; exits non-zero on any failure."""
    roots = [cert for path in root for cert in load_certificates_file(path)]
    with (
        tempfile.TemporaryDirectory(prefix="chargeward-verify-") as workdir,
        console.status(Text(f"Verifying {bundle}")),
    ):
        try:
            verified = verify_bundle(bundle, roots, workdir=Path(workdir))
        except ChargewardError as e:
            if str(bundle) in str(e):
                raise
            raise type(e)(f"{bundle}: {e}") from e
    _print_verified(bundle, verified)


def _print_verified(bundle: Path, verified: VerifiedBundle) -> None:
    manifest = verified.manifest
    signer = load_certificate(verified.signing_certificate_pem)
    console.print(
        Text(
            f"verified: {bundle} release {manifest.version} (release id {verified.manifest_sha256})"
        ),
        style="bold green",
        soft_wrap=True,
    )
    rows = _manifest_rows(manifest)
    rows.append(("Signed by", signer.subject.rfc4514_string()))
    rows.append(("Issued by", signer.issuer.rfc4514_string()))
    for image in verified.images:
        rows.append((f"{image.component}: signature", "valid"))
        rows.append((f"{image.component}: payload SHA-256", image.header.payload_sha256))
    console.print(fields_table(rows, title="Verified release"))


@app.command("show")
def show(bundle: BundlePath) -> None:
    """Show BUNDLE's manifest as it claims itself, WITHOUT verifying anything."""
    manifest = read_manifest(bundle)
    console.print(
        Text(f"NOT VERIFIED: {bundle} as it describes itself; check it with 'release verify'"),
        style="bold yellow",
        soft_wrap=True,
    )
    console.print(fields_table(_manifest_rows(manifest), title="Release manifest (not verified)"))


@app.command("upload")
def upload(
    bundle: BundlePath,
    provenance: Annotated[
        Path | None,
        typer.Option(
            "--provenance", help="Signed provenance from `release build --provenance`.", exists=True
        ),
    ] = None,
    reported_version: Annotated[
        list[str] | None,
        typer.Option(
            "--reported-version",
            help="MODEL=STRING: a version string stations of MODEL report for it (repeat).",
        ),
    ] = None,
    reported_version_pattern: Annotated[
        list[str] | None,
        typer.Option(
            "--reported-version-pattern",
            help="MODEL=REGEX: what stations of MODEL report for it, matched in full.",
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Upload a bundle to the server, which verifies it against its Manufacturer Root CAs.

    With --provenance, the server also checks that the provenance is signed by the release's
    signing key and names exactly its images and this bundle, then keeps it.  With
    --reported-version / --reported-version-pattern, stations of a model that boot reporting
    that string (e.g. 'AC22=TP-FW 1.1.0-b7') count as running the release (ADR 0037).
    """
    strings, patterns = reported_version or [], reported_version_pattern or []
    parse_option("--reported-version", strings)  # refused here, in one line, before uploading
    parse_option("--reported-version-pattern", patterns)
    params = [("reported_version", v) for v in strings]
    params += [("reported_version_pattern", v) for v in patterns]
    api = ApiClient(data_dir, server)
    with console.status(Text(f"Uploading {bundle.name}")):
        r = api.request(
            "POST",
            "/api/v1/releases",
            params=params,
            content=bundle.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
    console.print(Text(f"Uploaded release {r['version']}: id {r['id']}"), soft_wrap=True)
    for model, how in r.get("reported_versions", {}).items():
        said = [*how["versions"], *([f"/{how['pattern']}/"] if how["pattern"] else [])]
        console.print(Text(f"  {model} reports it as: {', '.join(said)}"), soft_wrap=True)
    for name, digest in r.get("documents", {}).items():
        console.print(Text(f"  {name}: sha256 {digest}"), soft_wrap=True)
    if provenance is not None:
        kept = api.request(
            "PUT",
            f"/api/v1/releases/{r['id']}/provenance",
            content=provenance.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        console.print(Text(f"Provenance verified and kept: sha256 {kept['sha256']}"))
    console.print(
        Text(f"It is {r['state']}: approvers run `chargeward release approve {r['id'][:12]}`"),
        soft_wrap=True,
    )


app.command("approve")(approve)
app.command("publish")(publish)
app.command("upload-vendor")(upload_vendor)  # a vendor's own signed image (ADR 0041)


@app.command("rebuild-check")
def rebuild_check(
    command: Annotated[str, typer.Option("--command", help='Build command, e.g. "make firmware".')],
    source: Annotated[Path, typer.Option("--source", help="Source directory.", file_okay=False)],
    output: Annotated[
        list[str], typer.Option("--output", help="Build output to compare (relative; repeat).")
    ],
    source_date_epoch: Annotated[
        int | None,
        typer.Option(envvar="SOURCE_DATE_EPOCH", min=0, help="Default: the last commit's time."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds allowed per build.")] = 1800,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON.", dir_okay=False)
    ] = None,
) -> None:
    """Build SOURCE twice in clean copies; exit 3 if an output differs, 1 if a build fails."""
    run_rebuild_check(command, source, output, source_date_epoch, timeout, json_out)
