"""``chargeward pki revoke``, ``crl`` and ``show-crl``: revocation of certificates a CA issued.

A compromised or retired firmware-signing certificate is revoked through a CRL the chargers
hold (published as the repository target ``revocation/firmware-signing.crl``)::

    $ chargeward pki revoke --ca-cert root.pem --ca-key file:keys/root.pem \\
          --cert signing.pem --reason keyCompromise --out firmware-signing.crl
    $ chargeward pki crl --ca-cert root.pem --ca-key file:keys/root.pem \\
          --out firmware-signing.crl            # re-issue before the next update is due
    $ chargeward pki show-crl firmware-signing.crl --root root.pem

The revocation list lives next to the CA certificate (``root.revocations.json`` for
``root.pem``); each CRL gets the next CRL number, and chargers refuse going back to an older
one.  Revocations and CRLs are audited like the other commands; a CRL replaces the previous
one atomically.
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

from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, console, record_audit
from chargeward.cli.display import fields_table, when
from chargeward.cli.pki import open_ca_signer
from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import (
    CRL_VALIDITY,
    REVOCATION_REASONS,
    Crl,
    RevokedEntry,
    describe_certificate,
    is_issued_by,
    issue_crl,
    load_certificate_file,
    load_certificates_file,
    verify_crl,
)
from chargeward.errors import ConfigError, Conflict, InvalidValue, TrustError, UntrustedCertificate
from chargeward.fileio import replace_file

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
    ca_signer = open_ca_signer(ca_key, ca, ca_cert)
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


def crl(
    ca_cert: CaCert,
    ca_key: CaKey,
    out: OutCrl,
    days: CrlDays = CRL_VALIDITY.days,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Issue a fresh CRL from the CA's revocation list (an empty one if nothing is revoked)."""
    ca = load_certificate_file(ca_cert)
    ca_signer = open_ca_signer(ca_key, ca, ca_cert)
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


def register(app: typer.Typer) -> None:
    """Add these commands to the ``pki`` group."""
    app.command("revoke")(revoke)
    app.command("crl")(crl)
    app.command("show-crl")(show_crl)
