"""Generated keys, certificates, payloads and TUF repositories for the benchmarks.

Everything is made in-process from fresh keys (never real secrets), the same way the unit
tests' ``tests.support.trust.TufKeys`` does, but without importing the tests:

    >>> keys = BenchKeys.create(tmp / "keys")                                 # doctest: +SKIP
    >>> repo = keys.init_repository(tmp / "tuf", now=now)                     # doctest: +SKIP
    >>> prepopulate(repo, keys, releases=5000, now=now)                       # doctest: +SKIP
    >>> approvals = [keys.approve(name, proposal) for name in APPROVERS[:2]]  # doctest: +SKIP
    >>> image = signed_image(keys, payload, tmp / "main.cwfw", now=now)       # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from cryptography import x509
from sqlalchemy.engine import make_url
from tuf.api.metadata import Metadata, TargetFile, Targets

from chargeward.crypto import (
    Signer,
    create_root_ca,
    generate_key,
    issue_firmware_signing_certificate,
    sign_firmware_digest,
)
from chargeward.publish import ImageRepository, OnlineSigners
from chargeward.publish.roles import create_repository
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.release.image import pack_image
from chargeward.trust.approval import Approval, label_accounts, signed_proposal
from chargeward.trust.tuf_keys import TufSigner, tuf_key

PASSPHRASE = b"benchmark passphrase, not a secret"
ROOT_HOLDERS = ("ana", "ben", "cyd")
APPROVERS = ("alice", "bob", "carol")
ONLINE = ("snapshot", "timestamp")
FIRMWARE_KEYS = ("firmware-ca", "firmware-signing")
MODEL = "AC22"
ORGANIZATION = "Chargeward Benchmarks"
_WRITE_CHUNK = 4 << 20


def _passphrase() -> bytes:
    return PASSPHRASE


@dataclass
class BenchKeys:
    """Root holders (2 of 3), approvers (2 of 3), online keys and a firmware signing pair."""

    signers: dict[str, Signer]

    @classmethod
    def create(cls, directory: Path) -> BenchKeys:
        names = [*ROOT_HOLDERS, *APPROVERS, *ONLINE, *FIRMWARE_KEYS]
        return cls({n: generate_key(f"file:{directory}/{n}.key", _passphrase) for n in names})

    def tuf(self, name: str) -> TufSigner:
        signer = self.signers[name]
        owner = None if name in ONLINE else name
        return TufSigner(signer, tuf_key(signer.public_key(), owner=owner))

    def online(self) -> OnlineSigners:
        return OnlineSigners(snapshot=self.tuf("snapshot"), timestamp=self.tuf("timestamp"))

    def approve(self, name: str, proposal: Metadata[Targets]) -> Approval:
        """Approver ``name`` signs the proposal's canonical bytes, as ``release approve`` does."""
        signature = self.tuf(name).sign(proposal.signed_bytes)
        return Approval(signature.keyid, name, signature.signature, submitted_by=name)

    def firmware_signing(self, now: dt.datetime) -> tuple[Signer, x509.Certificate]:
        """The firmware-signing key and its certificate under a fresh Manufacturer Root CA."""
        ca = self.signers["firmware-ca"]
        ca_certificate = create_root_ca(ca, "Bench Root CA", ORGANIZATION, now=now)
        signer = self.signers["firmware-signing"]
        certificate = issue_firmware_signing_certificate(
            ca, ca_certificate, signer.public_key(), "Bench Firmware Signing", ORGANIZATION, now=now
        )
        return signer, certificate

    def init_repository(self, directory: Path, *, now: dt.datetime) -> ImageRepository:
        """A new repository: 2-of-3 root, 2-of-3 approvers, empty targets version 1."""
        repo = ImageRepository(directory)
        create_repository(
            repo,
            root_signers=[self.tuf(n) for n in ROOT_HOLDERS],
            root_threshold=2,
            approver_signers=[self.tuf(n) for n in APPROVERS],
            targets_threshold=2,
            online=self.online(),
            now=now,
        )
        return repo


def release_bundle(
    work: Path, payload_size: int, passphrase: bytes, *, model: str = MODEL
) -> tuple[Path, Path]:
    """A demo PKI in ``work`` and a signed release 1.1.0 bundle of ``payload_size`` random
    bytes for ``model``, as a server accepts it; returns (root certificate PEM, bundle)."""
    from chargeward.local import make_pki
    from chargeward.release.bundle import build_bundle

    signer, cert, root_pem = make_pki(work, passphrase)
    payload = work / "firmware-1.1.0.bin"
    write_payload(payload, payload_size)
    bundle = work / "bench-1.1.0.cwb"
    build_bundle(
        payload,
        bundle,
        version="1.1.0",
        security_version=2,
        hardware_models=[model],
        signer=signer,
        signing_certificate=cert,
    )
    return root_pem, bundle


def write_payload(path: Path, size: int) -> None:
    """``size`` random bytes (fresh from the kernel, so nothing downstream can shortcut)."""
    with path.open("wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(_WRITE_CHUNK, left))
            fh.write(chunk)
            left -= len(chunk)


@dataclass(frozen=True)
class SignedFirmware:
    """A CWFW image as a charger receives it: file, OCPP signature, signing certificate."""

    path: Path
    signature: str
    certificate: x509.Certificate
    security_version: int


def signed_image(
    keys: BenchKeys, payload: Path, out: Path, *, now: dt.datetime, security_version: int = 1
) -> SignedFirmware:
    """Wrap ``payload`` in a CWFW envelope for ``MODEL`` and sign it, as ``release build`` does."""
    signer, certificate = keys.firmware_signing(now)
    _, digest = pack_image(
        payload,
        out,
        component="main",
        version="2.0.0",
        security_version=security_version,
        hardware_models=[MODEL],
    )
    signature = sign_firmware_digest(signer, digest)
    return SignedFirmware(out, signature, certificate, security_version)


def synthetic_release(index: int, *, minor: int = 0) -> dict[str, TargetFile]:
    """The targets of release ``1.<minor>.<index>``: one 4 MiB ``main`` image for one model."""
    version = f"1.{minor}.{index}"
    digest = hashlib.sha256(version.encode()).hexdigest()
    image = ImageFacts("main", digest, 4 << 20, base64.b64encode(bytes(72)).decode())
    return release_targets(
        version=version,
        security_version=1,
        models=[MODEL],
        release_class="feature",
        customer=None,
        images=[image],
    )


def prepopulate(repo: ImageRepository, keys: BenchKeys, *, releases: int, now: dt.datetime) -> int:
    """Publish ``releases`` releases as one targets version; returns that version."""
    additions: dict[str, TargetFile] = {}
    for i in range(releases):
        additions.update(synthetic_release(i))
    proposal = repo.propose(additions, now=now)
    approvals = [keys.approve(n, proposal) for n in APPROVERS[:2]]
    root = repo.root().signed
    signed = signed_proposal(root, proposal, approvals, label_accounts(root))
    return repo.publish_targets(signed, keys.online(), now=now)


POSTGRES_ENV = "CHARGEWARD_BENCH_POSTGRES_URL"


@asynccontextmanager
async def scratch_postgres() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one benchmark run (dropped afterwards); yields its
    URL.  The server comes from ``$CHARGEWARD_BENCH_POSTGRES_URL`` (default: trust auth on
    127.0.0.1:5432)."""
    admin = os.environ.get(POSTGRES_ENV, "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"cw_bench_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(admin).set(database=name).render_as_string(hide_password=False)
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
