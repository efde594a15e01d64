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

A compromised or retired firmware-signing certificate is revoked through a CRL the chargers
hold (published as the repository target ``revocation/firmware-signing.crl``)::

    $ chargeward pki revoke --ca-cert root.pem --ca-key file:keys/root.pem \
          --cert signing.pem --reason keyCompromise --out firmware-signing.crl
    $ chargeward pki crl --ca-cert root.pem --ca-key file:keys/root.pem \
          --out firmware-signing.crl            # re-issue before the next update is due
    $ chargeward pki show-crl firmware-signing.crl --root root.pem

The revocation list lives next to the CA certificate (``root.revocations.json`` for
``root.pem``); each CRL gets the next CRL number, and chargers refuse going back to an older
one.  Revocations and CRLs are audited like the other commands.

File keys are opened with one passphrase source: ``$CHARGEWARD_KEY_PASSPHRASE`` when set
(then the CA key and the signing key must share that passphrase), otherwise a prompt per key
on a terminal; a ``pkcs11:`` key asks for its token's PIN instead.  Certificates are written
as new files and never replace an existing one; a CRL replaces the previous one atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

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
from chargeward.cli.display import certificate_rows, fields_table, when
from chargeward.crypto.keys import Signer, generate_key
from chargeward.crypto.pki import (
    CRL_VALIDITY,
    REVOCATION_REASONS,
    Crl,
    RevokedEntry,
    certificate_fingerprint,
    certificate_pem,
    create_root_ca,
    describe_certificate,
    is_issued_by,
    issue_crl,
    issue_firmware_signing_certificate,
    key_matches_certificate,
    load_certificate_file,
    load_certificates_file,
    verify_crl,
)
from chargeward.crypto.root_rotation import endorsed_root_bundle, issue_link_certificate
from chargeward.crypto.tls import (
    check_tls_key_uri,
    issue_server_certificate,
    issue_station_certificate,
)
from chargeward.errors import ConfigError, Conflict, InvalidValue, TrustError, UntrustedCertificate
from chargeward.fileio import refuse_existing, replace_file, write_new_file

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
        return generate_key(uri, key_secret(uri, what=what, new=True))
    return open_signer(uri, what)


def _ca_signer(ca_key: str, ca_certificate: x509.Certificate, ca_cert: Path) -> Signer:
    ca_signer = open_signer(ca_key, "root CA key")
    if not key_matches_certificate(ca_signer.public_key(), ca_certificate):
        raise ConfigError(f"CA key {ca_signer.uri} does not match the CA certificate {ca_cert}")
    return ca_signer


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
    ca_signer = _ca_signer(ca_key, ca_certificate, ca_cert)
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
    signer = _ca_signer(ca_key, old, ca_cert)
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
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 15 * 365,
    generate: GenerateKey = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create the charger CA: it issues station certificates (CN = serial, profile 3)."""
    refuse_existing(out)
    signer = _key(key, generate=generate, what="charger CA key")
    certificate = create_root_ca(signer, cn, org, days=days)
    write_new_file(out, certificate_pem(certificate).encode("ascii"))
    record_audit(
        data_dir,
        "pki.charger_ca_created",
        str(out),
        {"key": signer.uri, "sha256": certificate_fingerprint(certificate)},
    )
    console.print(Text(f"Wrote charger CA certificate {out} (key {signer.uri})"), soft_wrap=True)


def _issue(
    kind: str, ca_key: str, ca_cert: Path, key: str, generate: bool, out: Path
) -> tuple[Signer, x509.Certificate, Signer]:
    refuse_existing(out)
    ca_certificate = load_certificate_file(ca_cert)
    return (
        _ca_signer(ca_key, ca_certificate, ca_cert),
        ca_certificate,
        _key(key, generate=generate, what=f"{kind} key"),
    )


@app.command("issue-station")
def issue_station(
    ca_key: Annotated[str, typer.Option("--ca-key", help="URI of the charger CA key.")],
    ca_cert: Annotated[Path, typer.Option("--ca-cert", help="Charger CA certificate (PEM).")],
    key: Annotated[str, typer.Option("--key", help="URI of the station key.")],
    out: OutCert,
    serial: Annotated[str, typer.Option("--serial", help="Station serial number (the CN).")],
    org: Organization,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 365,
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
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 365,
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


# -- revocation -----------------------------------------------------------------------------

REVOCATIONS_FORMAT = "chargeward-revocations-1"
CaCert = Annotated[
    Path, typer.Option("--ca-cert", help="Root CA certificate (PEM).", dir_okay=False)
]
CaKey = Annotated[str, typer.Option("--ca-key", help="URI of the root CA key.")]
OutCrl = Annotated[
    Path,
    typer.Option(
        "--out", help="Where to write the CRL (DER); replaced atomically.", dir_okay=False
    ),
]
CrlDays = Annotated[
    int, typer.Option("--days", min=1, max=366, help="Days until the CRL's next update.")
]


def revocation_list_path(ca_cert: Path) -> Path:
    """The revocation list next to the CA: ``root.pem`` -> ``root.revocations.json``."""
    return ca_cert.with_name(f"{ca_cert.stem}.revocations.json")


@dataclass(frozen=True)
class Revocations:
    """The CA's revocation list: the last CRL number issued and every revoked certificate."""

    crl_number: int
    entries: tuple[dict[str, str], ...]  # serial (hex), reason, revoked_at (ISO), subject

    def revoked(self) -> list[RevokedEntry]:
        return [
            RevokedEntry(
                int(e["serial"], 16), dt.datetime.fromisoformat(e["revoked_at"]), e["reason"]
            )
            for e in self.entries
        ]


def _key_id(ca: x509.Certificate) -> str:
    return describe_certificate(ca).public_key_fingerprint


def _read_revocations(path: Path, ca: x509.Certificate) -> Revocations:
    if not path.exists():
        return Revocations(0, ())
    try:
        data = json.loads(path.read_text())
        if data.get("format") != REVOCATIONS_FORMAT:
            raise InvalidValue(f"format is not {REVOCATIONS_FORMAT}")
        if data["issuer_key_sha256"] != _key_id(ca):
            raise InvalidValue("it belongs to another CA key")
        revocations = Revocations(int(data["crl_number"]), tuple(data["revoked"]))
        entries = revocations.revoked()
        if revocations.crl_number < 0 or any(
            e.reason not in REVOCATION_REASONS or e.revoked_at.tzinfo is None for e in entries
        ):
            raise InvalidValue("it holds an invalid entry")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"cannot use the revocation list {path}: {e}") from e
    return revocations


def _write_revocations(path: Path, ca: x509.Certificate, revocations: Revocations) -> None:
    data = {
        "format": REVOCATIONS_FORMAT,
        "issuer": ca.subject.rfc4514_string(),
        "issuer_key_sha256": _key_id(ca),
        "crl_number": revocations.crl_number,
        "revoked": list(revocations.entries),
    }
    replace_file(path, json.dumps(data, indent=1).encode() + b"\n")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so two runs never issue the same CRL number."""
    try:
        fh = path.with_name(path.name + ".lock").open("a")
    except OSError as e:
        raise ConfigError(f"cannot lock {path}: {e.strerror}") from e
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield


def _publish(
    ca_cert: Path,
    ca: x509.Certificate,
    ca_signer: Signer,
    revocations: Revocations,
    out: Path,
    days: int,
    now: dt.datetime,
) -> tuple[bytes, int]:
    """Issue the next CRL and return it with its number.

    The list (with the new number) is saved before the CRL: a number is never reused.
    """
    revocations = Revocations(revocations.crl_number + 1, revocations.entries)
    der = issue_crl(
        ca,
        ca_signer,
        revocations.revoked(),
        crl_number=revocations.crl_number,
        this_update=now,
        next_update=now + dt.timedelta(days=days),
    )
    _write_revocations(revocation_list_path(ca_cert), ca, revocations)
    replace_file(out, der)
    return der, revocations.crl_number


def _parse_serial(text: str) -> int:
    try:
        serial = int(text.removeprefix("0x").replace(":", ""), 16)
    except ValueError as e:
        raise typer.BadParameter(f"{text!r} is not a hexadecimal serial number") from e
    if serial <= 0:
        raise typer.BadParameter("a serial number is positive")
    return serial


def _crl_audit(der: bytes, crl_number: int, ca_signer: Signer, out: Path) -> dict[str, Any]:
    return {
        "ca_key": ca_signer.uri,
        "crl_number": crl_number,
        "crl_sha256": hashlib.sha256(der).hexdigest(),
        "out": str(out),
    }


@app.command("revoke")
def revoke(
    ca_cert: CaCert,
    ca_key: CaKey,
    out: OutCrl,
    cert: Annotated[
        Path | None,
        typer.Option("--cert", help="The certificate to revoke (PEM).", dir_okay=False),
    ] = None,
    serial: Annotated[
        str | None,
        typer.Option("--serial", help="Or its serial number, in hex as 'pki show' prints it."),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="RFC 5280 reason: " + ", ".join(REVOCATION_REASONS))
    ] = "unspecified",
    days: CrlDays = CRL_VALIDITY.days,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Revoke a certificate issued by the CA and write a fresh CRL with the next number."""
    if (cert is None) == (serial is None):
        raise typer.BadParameter("give exactly one of --cert and --serial")
    if reason not in REVOCATION_REASONS:
        raise typer.BadParameter(
            f"unknown reason {reason!r}; use one of {', '.join(REVOCATION_REASONS)}"
        )
    ca = load_certificate_file(ca_cert)
    subject = ""
    if cert is not None:
        target = load_certificate_file(cert)
        if not is_issued_by(target, ca):
            raise UntrustedCertificate(f"{cert} was not issued by the CA {ca_cert}")
        number, subject = target.serial_number, target.subject.rfc4514_string()
    else:
        number = _parse_serial(serial or "")
    ca_signer = _ca_signer(ca_key, ca, ca_cert)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    path = revocation_list_path(ca_cert)
    with _locked(path):
        revocations = _read_revocations(path, ca)
        if any(e.serial == number for e in revocations.revoked()):
            raise Conflict(f"serial {number:x} is already revoked in {path}")
        entry = {
            "serial": f"{number:x}",
            "reason": reason,
            "revoked_at": now.isoformat(),
            "subject": subject,
        }
        revocations = Revocations(revocations.crl_number, (*revocations.entries, entry))
        der, crl_number = _publish(ca_cert, ca, ca_signer, revocations, out, days, now)
    record_audit(
        data_dir,
        "pki.certificate_revoked",
        f"{number:x}",
        {**entry, "ca": ca.subject.rfc4514_string(), **_crl_audit(der, crl_number, ca_signer, out)},
    )
    console.print(
        Text(f"Revoked serial {number:x} ({reason}); wrote CRL {crl_number} to {out}"),
        soft_wrap=True,
    )


@app.command("crl")
def crl(
    ca_cert: CaCert,
    ca_key: CaKey,
    out: OutCrl,
    days: CrlDays = CRL_VALIDITY.days,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Issue a fresh CRL from the CA's revocation list (an empty one if nothing is revoked)."""
    ca = load_certificate_file(ca_cert)
    ca_signer = _ca_signer(ca_key, ca, ca_cert)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    path = revocation_list_path(ca_cert)
    with _locked(path):
        revocations = _read_revocations(path, ca)
        der, crl_number = _publish(ca_cert, ca, ca_signer, revocations, out, days, now)
    record_audit(
        data_dir,
        "pki.crl_issued",
        str(out),
        {
            "ca": ca.subject.rfc4514_string(),
            "revoked": len(revocations.entries),
            **_crl_audit(der, crl_number, ca_signer, out),
        },
    )
    console.print(
        Text(f"Wrote CRL {crl_number} ({len(revocations.entries)} revoked) to {out}"),
        soft_wrap=True,
    )


def _crl_rows(crl: Crl) -> list[tuple[str, object]]:
    return [
        ("Issuer", crl.issuer),
        ("CRL number", crl.crl_number),
        ("This update", when(crl.this_update)),
        ("Next update", when(crl.next_update)),
        ("Status", "EXPIRED (still revokes; issue a new one)" if crl.expired else "current"),
        ("Issuer key SHA-256", crl.issuer_key_id),
        ("Revoked", len(crl.entries)),
    ]


@app.command("show-crl")
def show_crl(
    crl_file: Annotated[Path, typer.Argument(metavar="CRL", help="CRL file (DER).")],
    root: Annotated[
        Path, typer.Option("--root", help="Root CA certificate(s) it must verify against (PEM).")
    ],
) -> None:
    """Verify a CRL against the root and show its issuer, number, dates and revoked serials."""
    anchors = load_certificates_file(root)
    try:
        der = crl_file.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read CRL file {crl_file}: {e.strerror}") from e
    try:
        verified = verify_crl(der, anchors, now=dt.datetime.now(dt.UTC))
    except TrustError as e:  # one line naming the file; the exit code says "refused"
        raise type(e)(f"{crl_file}: {e}") from e
    console.print(fields_table(_crl_rows(verified), title=str(crl_file)))
    if verified.entries:  # one line each: serials stay whole and greppable
        console.print(Text("Revoked certificates (serial, reason, revoked at):", style="bold"))
        for entry in verified.entries:
            line = f"  {entry.serial:x}  {entry.reason}  {when(entry.revoked_at)}"
            console.print(Text(line), soft_wrap=True)
