"""``chargeward release``: build, verify and inspect release bundles.

    $ chargeward release build --image firmware.bin --version 1.2.0 --security-version 3 \\
          --model AC22 --signing-key file:keys/signing.pem --signing-cert signing.pem \\
          --out acme-1.2.0.cwb
    $ chargeward release verify acme-1.2.0.cwb --root root.pem
    $ chargeward release show acme-1.2.0.cwb

``verify`` exits 0 only if every check passes; a refusal on trust grounds exits 3 and a
malformed bundle 6, each with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from tuf.api.metadata import Metadata, TargetFile, Targets

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
from chargeward.cli.supply import FailOn, findings_table
from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import load_certificate, load_certificate_file, load_certificates_file
from chargeward.crypto.signature import sha256_file
from chargeward.errors import ChargewardError, ConfigError, Conflict, TrustError
from chargeward.fileio import refuse_existing, write_new_file
from chargeward.publish.targets import DeltaFacts, ImageFacts, bundle_targets, release_targets
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
from chargeward.supply.report_check import read_report
from chargeward.supply.severity import Severity
from chargeward.trust.approval import approval_document
from chargeward.trust.review import Review, fetch_published, review_files
from chargeward.trust.tuf_keys import TufSigner

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
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Upload a bundle to the server, which verifies it against its Manufacturer Root CAs.

    With --provenance, the server also checks that the provenance is signed by the release's
    signing key and names exactly its images and this bundle, then keeps it.
    """
    api = ApiClient(data_dir, server)
    with console.status(Text(f"Uploading {bundle.name}")):
        r = api.request(
            "POST",
            "/api/v1/releases",
            content=bundle.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
    console.print(Text(f"Uploaded release {r['version']}: id {r['id']}"), soft_wrap=True)
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


def trusted_root(data_dir: Path, tuf_root: Path | None) -> bytes:
    if tuf_root is not None:
        return tuf_root.read_bytes()
    local = data_dir / "tuf" / "metadata" / "1.root.json"
    if local.exists():
        return local.read_bytes()
    raise ConfigError("pass --tuf-root: the repository's root.json you trust")


def _expected_targets(
    view: dict[str, Any], bundle: Path | None, roots: list[Path]
) -> dict[str, Any]:
    """What the release should add: from the bundle in hand if given, else the server's view;
    with the server's deltas either way (each only ever rebuilds an image of the release: the
    charger checks the result against that image's target)."""
    return _review_inputs(view, bundle, roots)[0]


def _review_inputs(
    view: dict[str, Any], bundle: Path | None, roots: list[Path]
) -> tuple[dict[str, Any], bytes | None]:
    """The expected targets (:func:`_expected_targets`) and, with ``bundle``, its scan report."""
    deltas = [
        DeltaFacts(
            d["component"],
            d["from_version"],
            d["from_sha256"],
            d["from_length"],
            d["sha256"],
            d["length"],
        )
        for d in view.get("deltas", [])
    ]
    if bundle is None:
        return _release_targets(view, deltas), None
    if not roots:
        raise ConfigError("--bundle needs --root (the Manufacturer Root CA) to verify it")
    anchors = [cert for path in roots for cert in load_certificates_file(path)]
    with tempfile.TemporaryDirectory(prefix="chargeward-approve-") as workdir:
        verified = verify_bundle(bundle, anchors, workdir=Path(workdir))
    if verified.manifest_sha256 != view["id"]:
        raise TrustError(f"{bundle} is not release {view['id'][:12]} on the server")
    return bundle_targets(verified, deltas), verified.attestations.get(SCAN_REPORT_NAME)


def _release_targets(view: dict[str, Any], deltas: list[DeltaFacts]) -> dict[str, Any]:
    return release_targets(
        version=view["version"],
        security_version=view["security_version"],
        models=view["hardware_models"],
        release_class=view["release_class"],
        customer=view["customer"],
        images=[
            ImageFacts(i["component"], i["sha256"], i["length"], i["signature"])
            for i in view["images"]
        ],
        sbom_sha256=view.get("documents", {}).get(SBOM_NAME),
        deltas=deltas,
        scan_report_sha256=view.get("documents", {}).get(SCAN_REPORT_NAME),
    )


def _signed_report(
    api: ApiClient, view: dict[str, Any], expected: Mapping[str, TargetFile], held: bytes | None
) -> bytes | None:
    """The scan report whose SHA-256 the targets to be signed carry (``scan_report_sha256``):
    the bundle's, else the server's copy, refused if it is another document."""
    digests = {
        (tf.unrecognized_fields.get("custom") or {}).get("scan_report_sha256")
        for tf in expected.values()
    } - {None}
    if not digests:
        return None
    data = held
    if data is None:
        path = f"/api/v1/releases/{view['id']}/documents/{SCAN_REPORT_NAME}"
        data = api.text("GET", path).encode()
    held_digest = hashlib.sha256(data).hexdigest()
    if digests != {held_digest}:
        raise TrustError(
            f"the scan report (sha256 {held_digest[:16]}) is not the one the targets carry "
            f"({', '.join(sorted(str(d)[:16] for d in digests))})"
        )
    return data


def _show_report(data: bytes) -> None:
    """Every finding of the scan report and every accepted risk in it: what approvers sign."""
    report = read_report(data, SCAN_REPORT_NAME)
    doc = json.loads(data)
    accepted = [f for f in doc["findings"] if isinstance(f.get("accepted_by"), dict)]
    console.print(
        Text(
            f"Scan report (sha256 {report.sha256[:16]}, {report.release} {report.version}): "
            f"{report.decision} at fail-on {report.threshold.label}, "
            f"{len(report.findings)} finding(s), {len(accepted)} accepted risk(s)"
        ),
        soft_wrap=True,
    )
    for f in doc["findings"]:
        risk = f.get("accepted_by")
        if isinstance(risk, dict):
            approvers = ", ".join(str(a) for a in risk.get("approvers") or []) or "nobody"
            decision = (
                f"ACCEPTED RISK {risk.get('ref', '')} ({risk.get('status')}, "
                f"{risk.get('justification')}) by {approvers} until {risk.get('expires')}"
            )
        else:
            decision = "BLOCKS" if f["blocking"] else "below fail-on"
        console.print(
            Text(f"  {f['advisory']} on {f['purl']} ({f['severity']}, {f['status']}): {decision}"),
            soft_wrap=True,
        )


@app.command("approve")
def approve(
    release_id: Annotated[str, typer.Argument(metavar="RELEASE", help="Release id (prefix).")],
    key: Annotated[str, typer.Option("--key", help="Your approver (targets) key URI.")],
    bundle: Annotated[
        Path | None, typer.Option(help="The bundle you reviewed; its images must match.")
    ] = None,
    root: Annotated[
        list[Path], typer.Option("--root", help="Manufacturer Root CA, to verify --bundle.")
    ] = [],  # noqa: B006 (typer needs a literal default)
    tuf_root: Annotated[
        Path | None, typer.Option(help="Trusted TUF root.json (default: the data dir's).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the signed approval to this file instead of sending it (to submit in "
            "the dashboard, confirmed with your TOTP code).",
            dir_okay=False,
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Check RELEASE's proposed targets metadata and sign it with your own key.

    The proposal must be exactly the published (verified) targets plus this release, with the
    next version and an expiry within the targets lifetime; anything else is refused before
    your key is touched.  Each customer's tenant role file it re-signs (ADR 0026) is checked
    the same way against the published role (read with your API token), shown with what it
    adds (customer, release, models), and signed with the same key.
    Every finding of the release's scan report and every risk accepted in it is listed first:
    the targets carry the report's SHA-256, so your signature covers them.
    """
    api = ApiClient(data_dir, server)
    view = api.request("GET", f"/api/v1/releases/{release_id}")
    expected, bundle_report = _review_inputs(view, bundle, root)
    report = _signed_report(api, view, expected, bundle_report)
    if report is not None:
        _show_report(report)
    summary = approve_proposal(
        api,
        view["id"],
        expected=expected,
        key=key,
        trusted_root=trusted_root(data_dir, tuf_root),
        title=f"Release {view['version']}: targets you are approving",
        output=output,
    )
    if output is not None:
        console.print(
            Text(f"release {view['version']}: approval signed, written to {output} ({summary})"),
            soft_wrap=True,
        )
        return
    console.print(Text(f"approved: release {view['version']} {summary}"), soft_wrap=True)


def approve_proposal(
    api: ApiClient,
    ref: str,
    *,
    expected: Mapping[str, TargetFile],
    key: str,
    trusted_root: bytes,
    title: str,
    output: Path | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Fetch proposal ``ref``, check it against the verified repository and the expiry policy
    at ``now`` (default: this machine's clock), sign it, send it (or, with ``output``, write it
    there: :func:`chargeward.trust.approval.approval_document`)."""
    proposal_view = api.request("GET", f"/api/v1/proposals/{ref}")
    if proposal_view["state"] == "published":
        raise Conflict(f"proposal {proposal_view['id']} is already published")
    proposal = Metadata[Targets].from_bytes(proposal_view["metadata"].encode())
    # The tenant role files (customer-locked releases, ADR 0026) the proposal changes too.
    roles = {
        str(name): Metadata[Targets].from_bytes(str(text).encode())
        for name, text in (proposal_view.get("roles") or {}).items()
    }
    with console.status(Text("Checking the proposal against the published repository")):
        published = fetch_published(api.base + "/tuf/", trusted_root, client=api.client)
        review = review_files(
            proposal, roles, published, expected, now=now or dt.datetime.now(dt.UTC)
        )
    table = Table(title=Text(title))
    for col in ("target", "sha256", "length", "security", "class", "customer"):
        table.add_column(col, overflow="fold")
    listed = [(path, proposal.signed.targets[path]) for path in review.changed]
    for name, rr in review.roles.items():
        listed += [(path, roles[name].signed.targets[path]) for path in rr.added]
    for path, tf in listed:
        custom = tf.unrecognized_fields.get("custom") or {}
        table.add_row(
            Text(path),
            Text(tf.hashes["sha256"][:16] + "…"),
            str(tf.length),
            str(custom.get("security_version", "-")),
            Text(str(custom.get("release_class", "-"))),
            Text(str(custom.get("customer") or "any")),
        )
    console.print(table)
    _show_roles(review, roles)
    signer = TufSigner(open_signer(key, "approver key"))
    signature = signer.sign(proposal.signed_bytes)
    role_signatures = {}
    for name, md in sorted(roles.items()):
        role_sig = signer.sign(md.signed_bytes)
        if role_sig.keyid != signature.keyid:  # pragma: no cover (one signer, one key)
            raise TrustError("the approver key changed while signing")
        role_signatures[name] = role_sig.signature
    if output is not None:
        document = approval_document(
            proposal_view["id"],
            proposal_view["release_id"],
            signature.keyid,
            signature.signature,
            role_signatures,
        )
        output.write_text(json.dumps(document, indent=2) + "\n")
        return f"proposal {proposal_view['id']}, key {signature.keyid[:12]}"
    result = api.request(
        "POST",
        f"/api/v1/proposals/{proposal_view['id']}/approvals",
        json={
            "keyid": signature.keyid,
            "signature": signature.signature,
            "roles": role_signatures,
        },
    )
    return str(result["summary"])


def _show_roles(review: Review, roles: Mapping[str, Metadata[Targets]]) -> None:
    """Every tenant role file the approver is about to sign and what it adds: customer,
    release version and models (what the top-level table does not show: ADR 0026)."""
    for path in review.moved_out:
        console.print(
            Text(f"  moves the public customer-locked target {path} into its tenant role"),
            soft_wrap=True,
        )
    for name, rr in review.roles.items():
        who = ", ".join(rr.customers) or "no customer yet"
        state = "new role" if rr.new else f"version {rr.version - 1} -> {rr.version}"
        releases = sorted(
            {
                f"{c.get('version', '?')} for {', '.join(c.get('models') or []) or '?'}"
                for path in rr.added
                if isinstance(c := roles[name].signed.targets[path].custom, dict) and "models" in c
            }
        )
        if rr.added:
            change = f"adds {len(rr.added)} target(s): release {'; '.join(releases) or '?'}"
        else:
            change = "re-signed, no new release"
        if rr.moved:
            change += f"; moves {len(rr.moved)} public target(s) in"
        console.print(
            Text(f"Tenant role {name} (customer {who}, {state}, {rr.listed} target(s)): {change}"),
            soft_wrap=True,
        )


@app.command("publish")
def publish(
    release_id: Annotated[str, typer.Argument(metavar="RELEASE", help="Release id (prefix).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Publish an approved release to the TUF repository (refused below the threshold)."""
    api = ApiClient(data_dir, server)
    with console.status(Text("Publishing")):
        view = api.request("POST", f"/api/v1/releases/{release_id}/publish")
    console.print(
        Text(
            f"published release {view['version']} (id {view['id'][:12]}) "
            f"as targets version {view['targets_version']}"
        ),
        soft_wrap=True,
    )


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
