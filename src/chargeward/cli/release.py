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

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import (
    DEFAULT_DATA_DIR,
    DataDir,
    cli_passphrase,
    console,
    record_audit,
)
from chargeward.cli.display import fields_table
from chargeward.crypto.keys import load_signer
from chargeward.crypto.pki import load_certificate, load_certificate_file, load_certificates_file
from chargeward.errors import ChargewardError
from chargeward.release.bundle import (
    Manifest,
    VerifiedBundle,
    build_bundle,
    read_manifest,
    verify_bundle,
)

app = typer.Typer(no_args_is_help=True)

BundlePath = Annotated[Path, typer.Argument(metavar="BUNDLE", help="Release bundle (.cwb).")]


def _manifest_rows(manifest: Manifest) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("Release id", manifest.release_id),
        ("Version", manifest.version),
        ("Security version", manifest.security_version),
        ("Hardware models", ", ".join(manifest.hardware_models)),
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
    return rows


@app.command("build")
def build(
    image: Annotated[Path, typer.Option("--image", help="Raw firmware payload.")],
    version: Annotated[str, typer.Option("--version", help="Firmware version, e.g. 1.2.0.")],
    security_version: Annotated[
        int, typer.Option("--security-version", min=0, help="Anti-rollback counter.")
    ],
    model: Annotated[
        list[str], typer.Option("--model", help="Hardware model (repeat for several).")
    ],
    signing_key: Annotated[str, typer.Option("--signing-key", help="Signing key URI.")],
    signing_cert: Annotated[
        Path, typer.Option("--signing-cert", help="Firmware-signing certificate (PEM).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle to create (.cwb).", dir_okay=False)],
    component: Annotated[str, typer.Option("--component", help="Image component.")] = "main",
    notes: Annotated[str, typer.Option("--notes", help="Release notes.")] = "",
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Pack, sign and write a release bundle (never overwrites OUT)."""
    certificate = load_certificate_file(signing_cert)
    signer = load_signer(signing_key, cli_passphrase(what="signing key"))
    with console.status(Text(f"Packing and signing {image}")):
        manifest = build_bundle(
            image,
            out,
            version=version,
            security_version=security_version,
            hardware_models=model,
            signer=signer,
            signing_certificate=certificate,
            component=component,
            notes=notes,
        )
    record_audit(
        data_dir,
        "release.build",
        manifest.release_id,
        {
            "version": version,
            "security_version": security_version,
            "hardware_models": sorted(model),
            "signing_key": signer.uri,
            "images": {i.component: i.sha256 for i in manifest.images},
            "bundle": str(out),
        },
    )
    console.print(Text(f"Built {out}: release id {manifest.release_id}"), soft_wrap=True)
    rows = _manifest_rows(manifest)
    rows.append(("Signed by", certificate.subject.rfc4514_string()))
    console.print(fields_table(rows))


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
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: Annotated[str | None, typer.Option(help="Server URL (default: from data dir).")] = None,
) -> None:
    """Upload a bundle to the server, which verifies it against its Manufacturer Root CAs."""
    with console.status(Text(f"Uploading {bundle.name}")):
        r = ApiClient(data_dir, server).request(
            "POST",
            "/api/v1/releases",
            content=bundle.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
    console.print(Text(f"Uploaded release {r['version']}: id {r['id']}"), soft_wrap=True)
