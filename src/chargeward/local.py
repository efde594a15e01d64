"""Local processes and a throw-away manufacturer for demos, simulations, tests and benchmarks.

``spawn`` starts ``chargeward ...`` as its own process with its output in a log file;
``start_server`` starts a server on free loopback ports and waits for its ``server.json``;
``make_pki`` makes a Manufacturer Root CA and a firmware-signing certificate (encrypted key
files); ``make_repository`` makes the keys of a 2-of-3 root and 2-of-3 approvers and runs
``chargeward repo init``.

    server, info = start_server(data, root_pem, log)
    info["ocpp_url"]
    # -> 'ws://127.0.0.1:40123/ocpp/'
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chargeward.crypto import (
    certificate_pem,
    create_root_ca,
    generate_key,
    issue_firmware_signing_certificate,
)
from chargeward.crypto.keys import FileSigner, write_new_key_file
from chargeward.crypto.tls import issue_server_certificate
from chargeward.errors import ChargewardError, TransportError
from chargeward.supply.advisories import AdvisorySet, advisory_set, load_advisories
from chargeward.supply.components import Library


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after 10 s; returns everything the process printed."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.output()


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    """Start ``chargeward ARGS`` as its own process, output to ``log``."""
    with log.open("wb") as fh:
        p = subprocess.Popen(
            [sys.executable, "-m", "chargeward", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return Process(p, log)


def run_cli(args: list[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "chargeward", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if r.returncode != 0:
        raise ChargewardError(
            f"chargeward {args[0]} {args[1]} failed: {(r.stderr or r.stdout).strip()}"
        )
    return r.stdout


def wait_for_file(path: Path, proc: Process, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        if proc.popen.poll() is not None:
            raise ChargewardError(f"the server exited; see {proc.log}")
        time.sleep(0.1)
    raise TransportError(f"the server did not start within {timeout}s; see {proc.log}")


@dataclass(frozen=True)
class LabTls:
    """A throw-away CSMS CA and its server certificate for 127.0.0.1, ::1 and localhost: the
    HTTP listener of a demo or test server speaks https with it (ADR 0025).  Chargers trust
    ``ca_pem`` as their CSMS root; a browser pins :meth:`spki_sha256`.  The key stays in memory
    until :meth:`install` writes it for one server under that server's passphrase."""

    ca_pem: str
    certificate_pem: str  # the server certificate, then the CA
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, days: int = 30) -> LabTls:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_signer = FileSigner("file:lab-csms-ca", ca_key)  # in memory only
        ca = create_root_ca(ca_signer, "Chargeward Lab CSMS CA", "Lab", days=days)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue_server_certificate(
            ca_signer,
            ca,
            key.public_key(),
            "127.0.0.1",
            "Lab",
            alt_names=("localhost", "::1"),
            days=days,
        )
        return cls(certificate_pem(ca), certificate_pem(cert) + certificate_pem(ca), key)

    def spki_sha256(self) -> str:
        """base64 SHA-256 of the server key's SubjectPublicKeyInfo (Chromium's
        ``--ignore-certificate-errors-spki-list``)."""
        import base64

        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        return base64.b64encode(digest.finalize()).decode()

    def install(self, d: Path, passphrase: bytes) -> list[str]:
        """Write the chain, the key (under ``passphrase``) and the CA to ``d``; returns the
        server options that use them."""
        d.mkdir(parents=True, exist_ok=True)
        (d / "https.pem").write_text(self.certificate_pem)
        (d / "csms-ca.pem").write_text(self.ca_pem)
        key = d / "https.key"
        key.unlink(missing_ok=True)
        write_new_key_file(f"file:{key}", lambda: passphrase, self.key)
        return ["--http-tls-cert", str(d / "https.pem"), "--http-tls-key", f"file:{key}"]


def start_server(
    data_dir: Path,
    root_pem: Path,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    public_url: str | None = None,
    extra_args: Sequence[str] = (),
    tls: LabTls | None = None,
) -> tuple[Process, dict[str, Any]]:
    """Start ``chargeward server`` on free loopback ports; returns it and its server.json.

    With ``tls`` the HTTP listener speaks https with the lab certificate (written beside the
    data directory, its key under ``$CHARGEWARD_KEY_PASSPHRASE`` of ``env``)."""
    args = [
        "server",
        "--data-dir",
        str(data_dir),
        "--ocpp-port",
        "0",
        "--http-port",
        "0",
        "--manufacturer-root",
        str(root_pem),
        "--allow-insecure-profile-1",  # demo and tests on loopback: plain ws
    ]
    if public_url:
        args += ["--public-url", public_url]
    if tls is not None:
        secret = {**os.environ, **(env or {})}.get("CHARGEWARD_KEY_PASSPHRASE", "")
        args += tls.install(data_dir.parent / f"{data_dir.name}-https", secret.encode())
    (data_dir / "server.json").unlink(missing_ok=True)  # a killed server leaves its own
    proc = spawn([*args, *extra_args], log, env)
    try:
        return proc, wait_for_file(data_dir / "server.json", proc)
    except ChargewardError:
        proc.stop()
        raise


def make_pki(d: Path, passphrase: bytes) -> tuple[Any, Any, Path]:
    root_key = generate_key(f"file:{d}/root-ca.key", lambda: passphrase)
    root = create_root_ca(root_key, "Demo Chargers Ltd Manufacturer Root CA", "Demo Chargers Ltd")
    (d / "root-ca.pem").write_text(certificate_pem(root))
    signing_key = generate_key(f"file:{d}/firmware-signing.key", lambda: passphrase)
    cert = issue_firmware_signing_certificate(
        root_key,
        root,
        signing_key.public_key(),
        "Demo Chargers Ltd Firmware Signing",
        "Demo Chargers Ltd",
    )
    (d / "firmware-signing.pem").write_text(certificate_pem(cert))
    return signing_key, cert, d / "root-ca.pem"


ROOT_HOLDERS = ("ana", "ben", "cyd")
APPROVERS = ("alice", "bob", "carol")


def make_repository(keys: Path, data: Path, env: dict[str, str]) -> Path:
    """Keys for a 2-of-3 root and 2-of-3 approvers, then ``chargeward repo init``."""
    keys.mkdir(parents=True)
    secret = env["CHARGEWARD_KEY_PASSPHRASE"].encode()
    uri = {}
    for name in (*ROOT_HOLDERS, *APPROVERS, "snapshot", "timestamp"):
        uri[name] = generate_key(f"file:{keys / name}.key", lambda: secret).uri
    root_json = keys / "root.json"
    args = ["repo", "init", "--data-dir", str(data), "--root-out", str(root_json)]
    for name in ROOT_HOLDERS:
        args += ["--root-key", f"{name}={uri[name]}"]
    for name in APPROVERS:
        args += ["--targets-key", f"{name}={uri[name]}"]
    args += ["--snapshot-key", uri["snapshot"], "--timestamp-key", uri["timestamp"]]
    run_cli(args, env)
    return root_json


# What the demo firmware declares it is built from (versions past the example advisories).
DEMO_LIBRARIES = (
    Library("zlib", "1.3.1", "pkg:generic/zlib@1.3.1", "Zlib"),
    Library("openssl", "3.0.15", "pkg:generic/openssl@3.0.15", "Apache-2.0"),
    Library("curl", "8.11.1", "pkg:generic/curl@8.11.1", "curl"),
)
EXAMPLE_ADVISORIES = Path(__file__).resolve().parents[2] / "examples" / "advisories"


def demo_advisories() -> AdvisorySet:
    """The OSV advisories shipped in ``examples/advisories`` (in a source checkout)."""
    if EXAMPLE_ADVISORIES.is_dir():
        return load_advisories(EXAMPLE_ADVISORIES)
    return advisory_set([])
