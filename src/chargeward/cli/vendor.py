"""``chargeward vendor-root add|list|remove`` and ``chargeward release upload-vendor``: a vendor's
own signed firmware (ADR 0041).

    chargeward vendor-root add --model AC22 --cert acme-root.pem
    chargeward release upload-vendor acme-4.2.0.bin --model AC22 --version 4.2.0 \\
        --signature acme-4.2.0.sig --signing-cert acme-signing.pem [--sbom sbom.cdx.json]

The signature file holds the base64 OCPP signature and the certificate file the PEM, both as
the vendor shipped them; they are sent unchanged (the server refuses them with the reason if
they do not verify under the root registered for the model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console
from chargeward.errors import ConfigError

app = typer.Typer(no_args_is_help=True)

Model = Annotated[str, typer.Option("--model", help="Hardware model the root is trusted for.")]


@app.command("add")
def add(
    model: Model,
    cert: Annotated[
        Path, typer.Option("--cert", exists=True, dir_okay=False, help="Vendor root (PEM).")
    ],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Register a vendor's manufacturer root for a model (audited)."""
    r = ApiClient(data_dir, server).request(
        "POST",
        "/api/v1/vendor-roots",
        params={"model": model},
        content=cert.read_bytes(),
        headers={"Content-Type": "application/x-pem-file"},
    )
    console.print(
        Text(f"Registered vendor root {r['fingerprint']} ({r['subject']}) for {r['model']}"),
        soft_wrap=True,
    )


@app.command("list")
def list_roots(
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """The vendor roots registered, per model."""
    params = {"model": model} if model else {}
    rows = ApiClient(data_dir, server).request("GET", "/api/v1/vendor-roots", params=params)
    table = Table("Model", "Fingerprint (SHA-256)", "Subject", "Valid until", "Added by")
    for r in rows:
        table.add_row(r["model"], r["fingerprint"], r["subject"], r["not_after"], r["added_by"])
    console.print(table)


@app.command("remove")
def remove(
    model: Model,
    fingerprint: Annotated[str, typer.Argument(help="The root's SHA-256 fingerprint.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Unregister a vendor root (releases it verified stay; audited)."""
    ApiClient(data_dir, server).request("DELETE", f"/api/v1/vendor-roots/{model}/{fingerprint}")
    console.print(Text(f"Removed vendor root {fingerprint} for {model}"), soft_wrap=True)


def upload_vendor(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Vendor image.")],
    model: Annotated[list[str], typer.Option("--model", help="Hardware model (repeat).")],
    version: Annotated[str, typer.Option("--version", help="The image's version.")],
    signature: Annotated[
        Path, typer.Option("--signature", exists=True, help="Base64 OCPP signature, as shipped.")
    ],
    signing_cert: Annotated[
        Path, typer.Option("--signing-cert", exists=True, help="Signing certificate PEM.")
    ],
    security_version: Annotated[int, typer.Option("--security-version", min=0)] = 0,
    sbom: Annotated[
        Path | None, typer.Option("--sbom", exists=True, help="CycloneDX SBOM, if supplied.")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Upload a vendor's own signed image, its signature and certificate exactly as shipped.

    The server checks them against the vendor root registered for each model and keeps the
    image as a release with provenance vendor-supplied; it still needs k-of-n approval.
    """
    try:
        signature_text = signature.read_text("ascii").strip()
        certificate = signing_cert.read_text("ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the signature or certificate: {e}") from e
    files: dict[str, Any] = {"image": (image.name, image.read_bytes(), "application/octet-stream")}
    if sbom is not None:
        files["sbom"] = (sbom.name, sbom.read_bytes(), "application/json")
    with console.status(Text(f"Uploading {image.name}")):
        r = ApiClient(data_dir, server).request(
            "POST",
            "/api/v1/vendor-releases",
            files=files,
            data={
                "signature": signature_text,
                "signing_certificate": certificate,
                "model": model,
                "version": version,
                "security_version": str(security_version),
            },
        )
    console.print(
        Text(f"Uploaded vendor release {r['version']} ({r['provenance']}): id {r['id']}"),
        soft_wrap=True,
    )
    if "sbom.cdx.json" not in r.get("documents", {}):
        console.print(Text("  sbom: missing (listed for approval flagged so)"))
    console.print(
        Text(f"It is {r['state']}: approvers run `chargeward release approve {r['id'][:12]}`"),
        soft_wrap=True,
    )
