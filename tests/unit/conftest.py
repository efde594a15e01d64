"""Shared fixtures for the unit tests: passphrases, a small PKI, a firmware payload, a clock
and a TUF repository served on 127.0.0.1 (tests/support/tufrepo.py).

Tests use these through fixtures only (``conftest`` is not imported by name), so the module
stays private to this directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from chargeward.crypto.keys import Signer, generate_key
from chargeward.crypto.pki import create_root_ca, issue_firmware_signing_certificate
from tests.support.tufrepo import Clock, TufRepo

PASSPHRASE = b"correct horse battery staple"


def passphrase() -> bytes:
    return PASSPHRASE


@dataclass(frozen=True)
class Pki:
    """A Manufacturer Root CA and a firmware-signing certificate issued by it."""

    root_signer: Signer
    root: x509.Certificate
    signer: Signer
    signing_cert: x509.Certificate


def make_pki(directory: Path, org: str = "ACME") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    root_signer = generate_key(f"file:{directory / 'root.key'}", passphrase)
    root = create_root_ca(root_signer, f"{org} Manufacturer Root CA", org)
    signer = generate_key(f"file:{directory / 'signing.key'}", passphrase)
    signing_cert = issue_firmware_signing_certificate(
        root_signer, root, signer.public_key(), f"{org} Firmware Signing", org
    )
    return Pki(root_signer, root, signer, signing_cert)


PkiFactory = Callable[[Path], Pki]


@pytest.fixture
def secret() -> Callable[[], bytes]:
    """The passphrase source used for every test key."""
    return passphrase


@pytest.fixture
def pki_factory() -> PkiFactory:
    return make_pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other_pki(tmp_path: Path) -> Pki:
    """A second, unrelated manufacturer using the *same names* as ``pki``."""
    return make_pki(tmp_path / "other-pki")


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "firmware.bin"
    path.write_bytes(os.urandom(200_000))
    return path


@pytest.fixture
def clock() -> Clock:
    """The clock shared by a TUF repository and the charger under test."""
    return Clock()


@pytest.fixture
def repo(clock: Clock) -> Iterator[TufRepo]:
    """An empty TUF repository (root 2-of-3, targets 2-of-3) on 127.0.0.1."""
    with TufRepo(clock) as r:
        yield r
