"""Provision chargers at the end of the production line.

Per charger (:func:`provision_charger`): fresh random credentials, a device-unique key derived
from the product secret and the serial number ("fused" into the charger), a P-256 key pair made
on the charger side with its certificate (CN = serial number) from the manufacturer's charger
CA, the trust anchors, the customer lock, and the factory firmware image.  A batch
(:func:`provision_batch`) returns one :class:`Registration` per charger: public data and the
argon2id hash of its BasicAuthPassword, the only form in which a password leaves the factory.

    ca = FactoryCa(open_signer("pkcs11:token=factory;object=charger-ca"), ca_cert)

    regs = provision_batch([ChargerSpec("CP-000001", "AC22")], Path("out"),
                           product_secret=secret, ca=ca, anchors=anchors,
                           factory_bundle=Path("factory.cwb"))
    write_registration(Path("out/registration.json"), regs)

Hashing is the slow part (argon2id at the station-secret cost, enough for 139-bit random
passwords; see ``hash_station_secret``): the batch hashes in a process pool while the main
process goes on provisioning; passwords travel to the workers
over a pipe, never through a file.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from chargeward.agent.credentials import CredentialStore
from chargeward.agent.provision import FactoryImage, TrustAnchors, install, verified_factory_image
from chargeward.agent.state import Identity, StateDir
from chargeward.agent.storage import atomic_write
from chargeward.crypto import (
    Signer,
    certificate_fingerprint,
    certificate_pem,
    key_matches_certificate,
    load_certificate,
)
from chargeward.crypto.pki import issue_device_certificate
from chargeward.crypto.sealing import (
    MIN_PRODUCT_SECRET,
    DevicePublicKey,
    derive_device_key,
    device_public_key,
)
from chargeward.crypto.station_passwords import hash_station_secret
from chargeward.errors import BundleError, ConfigError, Conflict, UntrustedCertificate
from chargeward.factory.credentials import generate_credentials
from chargeward.limits import DEFAULT_FORMAT_LIMITS

REGISTRATION_FORMAT = "chargeward-factory-registration/1"
DEFAULT_VALIDITY = dt.timedelta(days=20 * 365 + 5)  # 20 years
# A serial number names a directory and is the default station id (OCPP: <= 25 characters).
SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,24}$")


@dataclass(frozen=True)
class ChargerSpec:
    """One charger to provision; the station id defaults to the serial number."""

    serial_number: str
    model: str
    vendor: str = "Chargeward"
    customer: str | None = None
    station_id: str | None = None

    def identity(self) -> Identity:
        if not SERIAL_RE.fullmatch(self.serial_number):
            raise ConfigError(
                f"serial number {self.serial_number!r}: 1-25 letters, digits, '.', '_' or '-'"
            )
        return Identity(
            station_id=self.station_id or self.serial_number,
            model=self.model,
            vendor=self.vendor,
            serial_number=self.serial_number,
            customer=self.customer,
        )


@dataclass(frozen=True)
class FactoryCa:
    """The manufacturer's charger CA: a signer (key file or PKCS#11) and its certificate."""

    signer: Signer
    certificate: x509.Certificate

    def certifier(
        self, serial_number: str, organization: str, not_after: dt.datetime, now: dt.datetime
    ) -> Callable[[DevicePublicKey], x509.Certificate]:
        def certify(key: DevicePublicKey) -> x509.Certificate:
            return issue_device_certificate(
                self.signer,
                self.certificate,
                key,
                serial_number,
                organization,
                not_after=not_after,
                now=now,
            )

        return certify


@dataclass(frozen=True)
class Registration:
    """What the server learns about a charger: public data and a password hash only."""

    station_id: str
    serial_number: str
    model: str
    vendor: str
    customer: str | None
    password_hash: str
    device_certificate_sha256: str
    device_certificate_pem: str


def read_product_secret(path: Path) -> bytes:
    """The product secret: the raw bytes of ``path`` (e.g. 32 bytes from a CSPRNG)."""
    try:
        secret = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the product secret {path}: {e.strerror}") from e
    if len(secret) < MIN_PRODUCT_SECRET:
        raise ConfigError(
            f"the product secret in {path} is shorter than {MIN_PRODUCT_SECRET} bytes"
        )
    return secret


def provision_charger(
    state_dir: Path,
    spec: ChargerSpec,
    *,
    product_secret: bytes,
    ca: FactoryCa,
    anchors: TrustAnchors,
    image: FactoryImage,
    not_after: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> tuple[str, x509.Certificate]:
    """Provision one charger; returns its BasicAuthPassword (to hash) and its certificate."""
    now = now or dt.datetime.now(dt.UTC)
    identity = spec.identity()
    credentials = generate_credentials()
    install(
        state_dir,
        identity=identity,
        credentials=credentials,
        anchors=anchors,
        image=image,
        device_key=derive_device_key(product_secret, identity.serial_number),
        certify=ca.certifier(
            identity.serial_number, identity.vendor, not_after or now + DEFAULT_VALIDITY, now
        ),
    )
    cert = load_certificate(StateDir(state_dir).device_certificate_path.read_bytes())
    return credentials.basic_auth_password, cert


def _check_batch(specs: Sequence[ChargerSpec], out_dir: Path) -> None:
    if not specs:
        raise ConfigError("no chargers to provision")
    if len(specs) > DEFAULT_FORMAT_LIMITS.factory_batch:
        raise ConfigError(f"at most {DEFAULT_FORMAT_LIMITS.factory_batch} chargers per batch")
    for attr in ("serial_number", "station_id"):
        seen: set[str] = set()
        for spec in specs:
            value = getattr(spec, attr) or spec.serial_number
            if value in seen:
                raise ConfigError(f"{attr.replace('_', ' ')} {value} appears twice in the batch")
            seen.add(value)
    for spec in specs:
        spec.identity()  # every serial and customer is valid before the first one is written
        if (out_dir / spec.serial_number).exists():
            raise Conflict(f"{out_dir / spec.serial_number} exists: serials are provisioned once")


def provision_batch(
    specs: Sequence[ChargerSpec],
    out_dir: Path,
    *,
    product_secret: bytes,
    ca: FactoryCa,
    anchors: TrustAnchors,
    factory_bundle: Path,
    not_after: dt.datetime | None = None,
    workers: int | None = None,
    on_progress: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> list[Registration]:
    """Provision ``specs`` into ``out_dir/<serial>``; returns their registrations in order.

    ``on_progress`` is called with ``"provisioned"`` after each state directory is written
    and ``"hashed"`` after each password hash (from a worker thread).
    """
    _check_batch(specs, out_dir)
    anchors.check()
    now = now or dt.datetime.now(dt.UTC)
    notify = on_progress or (lambda _event: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[ChargerSpec, x509.Certificate, Future[str]]] = []
    # spawn: workers need only argon2; forking a process with threads is unsafe.
    context = multiprocessing.get_context("spawn")
    with (
        verified_factory_image(factory_bundle, anchors.manufacturer_roots_pem) as image,
        ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
    ):
        for spec in specs:
            password, cert = provision_charger(
                out_dir / spec.serial_number,
                spec,
                product_secret=product_secret,
                ca=ca,
                anchors=anchors,
                image=image,
                not_after=not_after,
                now=now,
            )
            future = pool.submit(hash_station_secret, password)
            future.add_done_callback(lambda _f: notify("hashed"))
            pending.append((spec, cert, future))
            notify("provisioned")
        return [
            Registration(
                station_id=spec.station_id or spec.serial_number,
                serial_number=spec.serial_number,
                model=spec.model,
                vendor=spec.vendor,
                customer=spec.customer,
                password_hash=future.result(),
                device_certificate_sha256=certificate_fingerprint(cert),
                device_certificate_pem=certificate_pem(cert),
            )
            for spec, cert, future in pending
        ]


def write_registration(path: Path, registrations: Sequence[Registration]) -> None:
    """Write the registration file that ``chargeward station import`` sends to the server."""
    doc = {"format": REGISTRATION_FORMAT, "stations": [asdict(r) for r in registrations]}
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode())


def read_registration(path: Path) -> list[dict[str, Any]]:
    """The station entries of a registration file (the server validates each one)."""
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise BundleError(f"{path} is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != REGISTRATION_FORMAT:
        raise BundleError(f"{path} is not a {REGISTRATION_FORMAT} file")
    stations = doc.get("stations")
    if not isinstance(stations, list) or not all(isinstance(s, dict) for s in stations):
        raise BundleError(f"{path}: 'stations' must be a list of objects")
    return stations


@dataclass(frozen=True)
class CheckedCharger:
    """A provisioned charger whose secrets opened with the product secret."""

    identity: Identity
    device_certificate_sha256: str


def verify_charger(state_dir: Path, product_secret: bytes) -> CheckedCharger:
    """End-of-line check: the charger's secrets open with the key derived from
    ``product_secret``, both copies agree, and the sealed device key matches its certificate.

    Raises :class:`~chargeward.errors.CredentialStoreError` for a wrong product secret or a
    changed or swapped file, :class:`UntrustedCertificate` for a certificate mismatch.
    """
    state = StateDir(state_dir)
    identity = state.identity()
    key = derive_device_key(product_secret, identity.serial_number)
    store = CredentialStore(state_dir, identity.serial_number, key=key)
    current, factory = store.load("current"), store.load("factory")
    if current != factory:
        raise Conflict(f"{identity.serial_number}: current credentials differ from the factory's")
    cert = load_certificate(state.device_certificate_path.read_bytes())
    if current.device_key_pem is None or not key_matches_certificate(
        device_public_key(current.device_key_pem), cert
    ):
        raise UntrustedCertificate(
            f"{identity.serial_number}: the sealed device key does not match secure/device.pem"
        )
    return CheckedCharger(identity, certificate_fingerprint(cert))
