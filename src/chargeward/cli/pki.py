"""``chargeward pki``: the Manufacturer Root CA and firmware-signing certificates.

OCPP 2.0.1 wants the firmware-signing certificate issued directly by the root, so there are
just two steps::

    $ export CHARGEWARD_KEY_PASSPHRASE=...
    $ chargeward pki init-root --key file:keys/root.pem --out root.pem \\
          --cn "ACME Manufacturer Root CA" --org ACME --generate-key
    $ chargeward pki issue-signing --ca-key file:keys/root.pem --ca-cert root.pem \\
          --key file:keys/signing.pem --out signing.pem \\
          --cn "ACME Firmware Signing" --org ACME --generate-key
    $ chargeward pki show signing.pem

All keys are opened with one passphrase source: ``$CHARGEWARD_KEY_PASSPHRASE`` when set
(then the CA key and the signing key must share that passphrase), otherwise a prompt per key
on a terminal.  Certificates are written as new files and never replace an existing one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, cli_passphrase, console, record_audit
from chargeward.cli.display import certificate_rows, fields_table
from chargeward.crypto.keys import Signer, generate_key, load_signer
from chargeward.crypto.pki import (
    certificate_fingerprint,
    certificate_pem,
    create_root_ca,
    describe_certificate,
    issue_firmware_signing_certificate,
    key_matches_certificate,
    load_certificate_file,
    load_certificates_file,
)
from chargeward.errors import ConfigError
from chargeward.fileio import refuse_existing, write_new_file

app = typer.Typer(no_args_is_help=True)

CommonName = Annotated[str, typer.Option("--cn", help="Subject common name.")]
Organization = Annotated[str, typer.Option("--org", help="Subject organization.")]
OutCert = Annotated[
    Path, typer.Option("--out", help="Where to write the new certificate (PEM).", dir_okay=False)
]
GenerateKey = Annotated[
    bool, typer.Option("--generate-key", help="Create the key at --key first (must not exist).")
]


def _key(uri: str, *, generate: bool, what: str) -> Signer:
    if generate:
        return generate_key(uri, cli_passphrase(confirm=True, what=what))
    return load_signer(uri, cli_passphrase(what=what))


@app.command("init-root")
def init_root(
    key: Annotated[str, typer.Option("--key", help="URI of the root CA key.")],
    out: OutCert,
    cn: CommonName,
    org: Organization,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 25 * 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create the self-signed Manufacturer Root CA certificate."""
    refuse_existing(out)
    signer = _key(key, generate=generate, what="root CA key")
    certificate = create_root_ca(signer, cn, org, days=days)
    write_new_file(out, certificate_pem(certificate).encode("ascii"))
    record_audit(
        data_dir,
        "pki.root_ca_created",
        str(out),
        {
            "key": signer.uri,
            "subject": certificate.subject.rfc4514_string(),
            "sha256": certificate_fingerprint(certificate),
            "key_generated": generate,
        },
    )
    console.print(Text(f"Wrote root CA certificate {out} (key {signer.uri})"), soft_wrap=True)
    console.print(fields_table(certificate_rows(describe_certificate(certificate))))


@app.command("issue-signing")
def issue_signing(
    ca_key: Annotated[str, typer.Option("--ca-key", help="URI of the root CA key.")],
    ca_cert: Annotated[Path, typer.Option("--ca-cert", help="Root CA certificate (PEM).")],
    key: Annotated[str, typer.Option("--key", help="URI of the firmware-signing key.")],
    out: OutCert,
    cn: CommonName,
    org: Organization,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 5 * 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Issue a firmware-signing certificate directly under the root CA."""
    refuse_existing(out)
    ca_certificate = load_certificate_file(ca_cert)
    ca_signer = load_signer(ca_key, cli_passphrase(what="root CA key"))
    if not key_matches_certificate(ca_signer.public_key(), ca_certificate):
        raise ConfigError(f"CA key {ca_signer.uri} does not match the CA certificate {ca_cert}")
    signer = _key(key, generate=generate, what="firmware-signing key")
    certificate = issue_firmware_signing_certificate(
        ca_signer, ca_certificate, signer.public_key(), cn, org, days=days
    )
    write_new_file(out, certificate_pem(certificate).encode("ascii"))
    record_audit(
        data_dir,
        "pki.signing_certificate_issued",
        str(out),
        {
            "key": signer.uri,
            "ca_key": ca_signer.uri,
            "subject": certificate.subject.rfc4514_string(),
            "serial": f"{certificate.serial_number:x}",
            "sha256": certificate_fingerprint(certificate),
            "key_generated": generate,
        },
    )
    console.print(
        Text(f"Wrote firmware-signing certificate {out} (key {signer.uri})"), soft_wrap=True
    )
    console.print(fields_table(certificate_rows(describe_certificate(certificate))))


@app.command("show")
def show(
    cert: Annotated[Path, typer.Argument(metavar="CERT.pem", help="PEM certificate file.")],
) -> None:
    """Show subject, issuer, validity, fingerprints and key usage of each certificate."""
    certificates = load_certificates_file(cert)
    for index, certificate in enumerate(certificates, start=1):
        title = f"{cert} ({index}/{len(certificates)})" if len(certificates) > 1 else str(cert)
        console.print(
            fields_table(certificate_rows(describe_certificate(certificate)), title=title)
        )
