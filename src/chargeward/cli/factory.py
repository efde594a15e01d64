"""CLI group: factory provisioning of chargers.

    $ head -c 32 /dev/urandom > product.secret      # once per product, kept in the factory
    $ chargeward factory provision --count 1000 --prefix CP- --model AC22 --customer acme \\
        --ca-cert charger-ca.pem --ca-key pkcs11:token=factory;object=charger-ca \\
        --manufacturer-root root.pem --tuf-root root.json --csms-root csms-root.pem \\
        --factory-bundle factory.cwb --product-secret-file product.secret --out batch-42
    $ chargeward station import batch-42/registration.json   # or --server/--token above
    $ chargeward factory verify --state-dir batch-42/CP-000001 --product-secret-file product.secret
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chargeward.agent.provision import TrustAnchors
from chargeward.cli.apiclient import TOKEN_ENV
from chargeward.cli.common import DEFAULT_DATA_DIR, console, open_signer
from chargeward.crypto.pki import load_certificate_file
from chargeward.errors import ConfigError
from chargeward.factory.provisioning import (
    ChargerSpec,
    FactoryCa,
    provision_batch,
    read_product_secret,
    verify_charger,
    write_registration,
)

app = typer.Typer(no_args_is_help=True)

REGISTRATION_FILE = "registration.json"


def _serials(serials: Path | None, count: int | None, prefix: str, first: int) -> list[str]:
    if (serials is None) == (count is None):
        raise ConfigError("give either --serials FILE or --count N (with --prefix)")
    if serials is not None:
        try:
            lines = serials.read_text().splitlines()
        except OSError as e:
            raise ConfigError(f"cannot read {serials}: {e.strerror}") from e
        return [s for line in lines if (s := line.strip()) and not s.startswith("#")]
    assert count is not None
    return [f"{prefix}{n:06d}" for n in range(first, first + count)]


def _not_after(valid_days: int, not_after: str | None) -> dt.datetime:
    if not_after is None:
        return dt.datetime.now(dt.UTC) + dt.timedelta(days=valid_days)
    try:
        return dt.datetime.fromisoformat(not_after).replace(tzinfo=dt.UTC)
    except ValueError as e:
        raise ConfigError(f"--not-after {not_after!r} is not a date (YYYY-MM-DD)") from e


@app.command("provision")
def provision(
    model: Annotated[str, typer.Option(help="Hardware model of every charger in the batch.")],
    ca_cert: Annotated[
        Path, typer.Option(help="The charger CA certificate (PEM).", exists=True, dir_okay=False)
    ],
    ca_key: Annotated[str, typer.Option(help="The charger CA key: file path or pkcs11: URI.")],
    manufacturer_root: Annotated[
        Path,
        typer.Option(
            help="ManufacturerRootCertificate(s), PEM (firmware trust).",
            exists=True,
            dir_okay=False,
        ),
    ],
    factory_bundle: Annotated[
        Path,
        typer.Option(help="Release bundle for the factory image.", exists=True, dir_okay=False),
    ],
    product_secret_file: Annotated[
        Path,
        typer.Option(
            help="Product secret (>= 32 random bytes); stays in the factory.",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="One state directory per charger goes here.")],
    serials: Annotated[
        Path | None,
        typer.Option(help="File of serial numbers, one per line.", exists=True, dir_okay=False),
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Number serials instead.")] = None,
    prefix: Annotated[str, typer.Option(help="Prefix of numbered serials.")] = "CP-",
    first: Annotated[int, typer.Option(min=0, help="First number of numbered serials.")] = 1,
    vendor: Annotated[str, typer.Option(help="Vendor (certificate O).")] = "Chargeward",
    customer: Annotated[
        str | None, typer.Option(help="Customer lock: installs only images for this customer.")
    ] = None,
    tuf_root: Annotated[
        Path | None,
        typer.Option(help="The TUF repository's root.json.", exists=True, dir_okay=False),
    ] = None,
    csms_root: Annotated[
        Path | None,
        typer.Option(help="CSMS root certificate(s), PEM.", exists=True, dir_okay=False),
    ] = None,
    valid_days: Annotated[
        int, typer.Option(min=1, help="Device certificate validity in days.")
    ] = 20 * 365 + 5,
    not_after: Annotated[
        str | None, typer.Option(help="Device certificates valid until this date instead.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Password-hashing processes (default: CPUs).")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="Register the batch with this server at once.")
    ] = None,
    token: Annotated[str | None, typer.Option(envvar=TOKEN_ENV, help="API token.")] = None,
) -> None:
    """Provision chargers: unique credentials, device certificate, anchors, customer lock.

    Writes OUT/<serial>/ per charger and OUT/registration.json (public data and password
    hashes only).  With --server the batch is registered at once; otherwise run
    'chargeward station import OUT/registration.json' later.
    """
    specs = [
        ChargerSpec(serial, model, vendor=vendor, customer=customer)
        for serial in _serials(serials, count, prefix, first)
    ]
    secret = read_product_secret(product_secret_file)
    ca = FactoryCa(open_signer(ca_key, "charger CA key"), load_certificate_file(ca_cert))
    anchors = TrustAnchors(
        manufacturer_root.read_bytes(),
        tuf_root.read_bytes() if tuf_root else None,
        csms_root.read_bytes() if csms_root else None,
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        written = progress.add_task("provisioned", total=len(specs))
        hashed = progress.add_task("hashed", total=len(specs))
        tasks = {"provisioned": written, "hashed": hashed}
        registrations = provision_batch(
            specs,
            out,
            product_secret=secret,
            ca=ca,
            anchors=anchors,
            factory_bundle=factory_bundle,
            not_after=_not_after(valid_days, not_after),
            workers=workers or os.cpu_count(),
            on_progress=lambda event: progress.advance(tasks[event]),
        )
    registration = out / REGISTRATION_FILE
    write_registration(registration, registrations)
    elapsed = time.perf_counter() - started
    console.print(
        f"provisioned {len(registrations)} chargers in {elapsed:.1f} s; "
        f"registration (hashes and public data only): {registration}"
    )
    if server is not None:
        from chargeward.cli.station import import_registration

        import_registration(registration, DEFAULT_DATA_DIR, server, token)


@app.command("verify")
def verify(
    state_dir: Annotated[Path, typer.Option(help="A provisioned charger.", file_okay=False)],
    product_secret_file: Annotated[Path, typer.Option(exists=True, dir_okay=False)],
) -> None:
    """End-of-line check: the charger's secrets open with the product secret and its device
    key matches its certificate.  Prints no secret."""
    checked = verify_charger(state_dir, read_product_secret(product_secret_file))
    console.print(
        f"{checked.identity.serial_number}: credentials open, device certificate "
        f"sha256 {checked.device_certificate_sha256}"
    )
