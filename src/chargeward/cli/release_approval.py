"""``chargeward release approve`` and ``publish``: an approver's review and signature of a
release's proposed TUF targets, and its publication once approved.

    $ chargeward release approve 3f2a9c --key file:keys/alice-targets.pem \\
          --bundle acme-1.2.0.cwb --root root.pem
    $ chargeward release publish 3f2a9c

The proposal is checked against the published (verified) repository before the approver's key
is touched (:func:`approve_proposal`, also used by ``chargeward repo``); every finding of the
release's scan report and every accepted risk in it is shown first.
"""

from __future__ import annotations

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
)
from chargeward.crypto.pki import load_certificates_file
from chargeward.errors import ConfigError, Conflict, TrustError
from chargeward.publish.targets import DeltaFacts, ImageFacts, bundle_targets, release_targets
from chargeward.release.bundle import (
    SBOM_NAME,
    SCAN_REPORT_NAME,
    verify_bundle,
)
from chargeward.supply.report_check import read_report
from chargeward.trust.approval import approval_document
from chargeward.trust.review import Review, fetch_published, review_files
from chargeward.trust.tuf_keys import TufSigner


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
