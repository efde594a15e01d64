"""Rendering helpers for the CLI: tables whose cells are plain text, never rich markup.

Values shown here come from files and user input, so they are wrapped in
:class:`rich.text.Text` and cannot be mistaken for markup; long hashes fold instead of being
cut off.

    console.print(fields_table([("Version", "1.2.0"), ("Length", 1024)]))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from rich import box
from rich.table import Table
from rich.text import Text

from chargeward.crypto.pki import CertificateInfo


def fields_table(rows: Iterable[tuple[str, object]], *, title: str | None = None) -> Table:
    """A two-column name/value table."""
    table = Table(show_header=False, box=box.SIMPLE, title=Text(title) if title else None)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(Text(name), Text(str(value)))
    return table


def when(moment: dt.datetime) -> str:
    """A UTC time as ``2026-11-21 10:00:00 UTC``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def validity(info: CertificateInfo, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    if now < info.not_before:
        return "not yet valid"
    if now > info.not_after:
        return "EXPIRED"
    return "valid now"


def certificate_rows(info: CertificateInfo) -> list[tuple[str, object]]:
    """The rows describing a certificate, for :func:`fields_table`."""
    return [
        ("Subject", info.subject),
        ("Issuer", info.issuer),
        ("Serial", info.serial),
        ("Valid from", when(info.not_before)),
        ("Valid until", when(info.not_after)),
        ("Status", validity(info)),
        ("SHA-256 fingerprint", info.fingerprint),
        ("Public key SHA-256", info.public_key_fingerprint),
        ("CA", "yes" if info.is_ca else "no"),
        ("Self-signed", "yes" if info.self_signed else "no"),
        ("Key usage", ", ".join(info.key_usage) or "-"),
        ("Extended key usage", ", ".join(info.extended_key_usage) or "-"),
    ]
