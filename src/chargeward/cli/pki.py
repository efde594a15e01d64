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

Chargers add a new Manufacturer Root CA only when a root they hold endorses it: the old
root's key issues a link certificate over the new root (RFC 4210 §4.4 NewWithOld), and the
station receives both in one bundle (docs/adr/0018-manufacturer-root-rotation.md)::

    $ chargeward pki init-root --key 'pkcs11:token=root-2030;object=root' --out root-2030.pem \\
          --cn "ACME Manufacturer Root CA 2030" --org ACME --generate-key
    $ chargeward pki link-root --ca-cert root.pem --ca-key 'pkcs11:token=root;object=root' \\
          --new-root root-2030.pem --out root-2030-endorsed.pem
    $ chargeward station install-root CP-1 --cert root-2030-endorsed.pem

Revocation and CRLs (``pki revoke``, ``crl``, ``show-crl``) are in
:mod:`chargeward.cli.revocation`.

File keys are opened with one passphrase source: ``$CHARGEWARD_KEY_PASSPHRASE`` when set
(then the CA key and the signing key must share that passphrase), otherwise a prompt per key
on a terminal; a ``pkcs11:`` key asks for its token's PIN instead.  Certificates are written
as new files and never replace an existing one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from rich.text import Text

from chargeward.cli.common import (
    DEFAULT_DATA_DIR,
    DataDir,
    console,
    key_secret,
    open_signer,
    record_audit,
)
from chargeward.cli.display import certificate_rows, fields_table
from chargeward.crypto.keys import Signer, generate_key
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
from chargeward.crypto.root_rotation import endorsed_root_bundle, issue_link_certificate
from chargeward.crypto.tls import (
    check_tls_key_uri,
    issue_server_certificate,
    issue_station_certificate,
)
from chargeward.errors import ConfigError
from chargeward.fileio import refuse_existing, write_new_file

app = typer.Typer(no_args_is_help=True)

CommonName = Annotated[str, typer.Option("--cn", help="Subject common name.")]
Organization = Annotated[str, typer.Option("--org", help="Subject organization.")]
OutCert = Annotated[
    Path, typer.Option("--out", help="Where to write the new certificate (PEM).", dir_okay=False)
]
ValidDays = Annotated[int, typer.Option("--days", min=1, help="Validity in days.")]
GenerateKey = Annotated[
    bool, typer.Option("--generate-key", help="Create the key at --key first (must not exist).")
]


def _key(uri: str, *, generate: bool, what: str) -> Signer:
    if generate:
        return generate_key(uri, key_secret(uri, what=what, new=True))
    return open_signer(uri, what)


def open_ca_signer(ca_key: str, ca_certificate: x509.Certificate, ca_cert: Path) -> Signer:
    ca_signer = open_signer(ca_key, "root CA key")
    if not key_matches_certificate(ca_signer.public_key(), ca_certificate):
        raise ConfigError(f"CA key {ca_signer.uri} does not match the CA certificate {ca_cert}")
    return ca_signer


def _new_ca(
    key: str, out: Path, cn: str, org: str, days: int, generate: bool, what: str
) -> tuple[Signer, x509.Certificate]:
    """A self-signed CA certificate written to ``out`` (which must not exist), and its key."""
    refuse_existing(out)
    signer = _key(key, generate=generate, what=what)
    certificate = create_root_ca(signer, cn, org, days=days)
    write_new_file(out, certificate_pem(certificate).encode("ascii"))
    return signer, certificate


def _issue(
    kind: str, ca_key: str, ca_cert: Path, key: str, generate: bool, out: Path
) -> tuple[Signer, x509.Certificate, Signer]:
    """The CA's key (checked against its certificate), the CA certificate and the new key."""
    refuse_existing(out)
    ca_certificate = load_certificate_file(ca_cert)
    return (
        open_ca_signer(ca_key, ca_certificate, ca_cert),
        ca_certificate,
        _key(key, generate=generate, what=f"{kind} key"),
    )


@app.command("init-root")
def init_root(
    key: Annotated[str, typer.Option("--key", help="URI of the root CA key.")],
    out: OutCert,
    cn: CommonName,
    org: Organization,
    days: ValidDays = 25 * 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create the self-signed Manufacturer Root CA certificate."""
    signer, certificate = _new_ca(key, out, cn, org, days, generate, "root CA key")
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
    days: ValidDays = 5 * 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Issue a firmware-signing certificate directly under the root CA."""
    ca_signer, ca_certificate, signer = _issue(
        "firmware-signing", ca_key, ca_cert, key, generate, out
    )
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


@app.command("link-root")
def link_root(
    ca_key: Annotated[
        str, typer.Option("--ca-key", help="URI of the current root's key (file: or pkcs11:).")
    ],
    ca_cert: Annotated[
        Path, typer.Option("--ca-cert", help="The current root's certificate (PEM).")
    ],
    new_root: Annotated[
        Path, typer.Option("--new-root", help="The new root certificate (PEM, from init-root).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Where to write the bundle: new root, then link (PEM).", dir_okay=False
        ),
    ],
    days: Annotated[
        int | None,
        typer.Option("--days", min=1, help="Link validity in days (default: until a root ends)."),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Endorse a new Manufacturer Root CA with the current root's key (root rotation).

    Writes the bundle chargers accept in InstallCertificate: the new root, then a link
    certificate the current root issues over the new root's subject and key.
    """
    refuse_existing(out)
    old = load_certificate_file(ca_cert)
    new = load_certificate_file(new_root)
    signer = open_ca_signer(ca_key, old, ca_cert)
    link = issue_link_certificate(signer, old, new, days=days)
    write_new_file(out, endorsed_root_bundle(new, [link]).encode("ascii"))
    record_audit(
        data_dir,
        "pki.root_link_issued",
        str(out),
        {
            "ca_key": signer.uri,
            "endorser": old.subject.rfc4514_string(),
            "endorser_sha256": certificate_fingerprint(old),
            "new_root": new.subject.rfc4514_string(),
            "new_root_sha256": certificate_fingerprint(new),
            "link_serial": f"{link.serial_number:x}",
            "link_not_after": link.not_valid_after_utc.isoformat(),
        },
    )
    endorsed = f"{new.subject.rfc4514_string()} endorsed by {old.subject.rfc4514_string()}"
    console.print(Text(f"Wrote {out}: {endorsed}"), soft_wrap=True)
    console.print(fields_table(certificate_rows(describe_certificate(link)), title="link"))


# -- OCPP security profiles 2 and 3: charger CA, station and CSMS server certificates --------


@app.command("init-charger-ca")
def init_charger_ca(
    key: Annotated[str, typer.Option("--key", help="URI of the charger CA key.")],
    out: OutCert,
    cn: CommonName,
    org: Organization,
    days: ValidDays = 15 * 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create the charger CA: it issues station certificates (CN = serial, profile 3)."""
    signer, certificate = _new_ca(key, out, cn, org, days, generate, "charger CA key")
    record_audit(
        data_dir,
        "pki.charger_ca_created",
        str(out),
        {"key": signer.uri, "sha256": certificate_fingerprint(certificate)},
    )
    console.print(Text(f"Wrote charger CA certificate {out} (key {signer.uri})"), soft_wrap=True)


@app.command("issue-station")
def issue_station(
    ca_key: Annotated[str, typer.Option("--ca-key", help="URI of the charger CA key.")],
    ca_cert: Annotated[Path, typer.Option("--ca-cert", help="Charger CA certificate (PEM).")],
    key: Annotated[str, typer.Option("--key", help="URI of the station key.")],
    out: OutCert,
    serial: Annotated[str, typer.Option("--serial", help="Station serial number (the CN).")],
    org: Organization,
    days: ValidDays = 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Issue a ChargingStationCertificate (CN = serial, O = organisation, clientAuth)."""
    ca_signer, ca_certificate, signer = _issue("station", ca_key, ca_cert, key, generate, out)
    certificate = issue_station_certificate(
        ca_signer, ca_certificate, signer.public_key(), serial, org, days=days
    )
    write_new_file(out, certificate_pem(certificate).encode("ascii"))
    record_audit(
        data_dir,
        "pki.station_certificate_issued",
        serial,
        {"serial": f"{certificate.serial_number:x}", "out": str(out), "key": signer.uri},
    )
    console.print(Text(f"Wrote station certificate {out} for {serial}"), soft_wrap=True)


@app.command("issue-server")
def issue_server(
    ca_key: Annotated[str, typer.Option("--ca-key", help="URI of the CSMS root CA key.")],
    ca_cert: Annotated[Path, typer.Option("--ca-cert", help="CSMS root CA certificate.")],
    key: Annotated[str, typer.Option("--key", help="file: URI of the server key.")],
    out: OutCert,
    fqdn: Annotated[str, typer.Option("--fqdn", help="Server name (the CN and a SAN).")],
    org: Organization,
    san: Annotated[
        list[str] | None, typer.Option("--san", help="More DNS names or IP addresses.")
    ] = None,
    days: ValidDays = 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Issue the CSMS TLS server certificate; --out gets the chain (leaf, then the CA)."""
    check_tls_key_uri(key)
    ca_signer, ca_certificate, signer = _issue("server", ca_key, ca_cert, key, generate, out)
    certificate = issue_server_certificate(
        ca_signer, ca_certificate, signer.public_key(), fqdn, org, alt_names=san or [], days=days
    )
    chain = certificate_pem(certificate) + certificate_pem(ca_certificate)
    write_new_file(out, chain.encode("ascii"))
    record_audit(
        data_dir,
        "pki.server_certificate_issued",
        fqdn,
        {"serial": f"{certificate.serial_number:x}", "out": str(out), "san": san or []},
    )
    console.print(Text(f"Wrote CSMS server certificate chain {out} for {fqdn}"), soft_wrap=True)
