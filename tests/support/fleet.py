"""Test support: a PKI, signed bundles, a real server process and real agent processes.

Everything here is generated per test session; the passphrase below protects generated
test fixtures only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chargeward.crypto import (
    certificate_pem,
    create_root_ca,
    generate_key,
    issue_firmware_signing_certificate,
)
from chargeward.crypto.keys import Signer, load_signer
from chargeward.crypto.pki import CRL_VALIDITY, RevokedEntry, issue_crl
from chargeward.local import LabTls, spawn, start_server
from chargeward.local import Process as Proc
from chargeward.release.bundle import build_bundle
from chargeward.supply.advisories import advisory_set
from chargeward.supply.allowlist import Allowlist
from chargeward.supply.attest import image_components, release_documents
from chargeward.supply.components import Library
from chargeward.supply.severity import Severity

TEST_PASSPHRASE = "test-fixture-passphrase-not-a-secret"  # generated test keys only
MODEL = "AC22"


def _pass() -> bytes:
    return TEST_PASSPHRASE.encode()


@dataclass
class Pki:
    dir: Path
    root_cert: Any
    root_pem: Path
    signing_signer: Signer
    signing_cert: Any

    @classmethod
    def create(cls, d: Path, name: str = "ACME") -> Pki:
        d.mkdir(parents=True, exist_ok=True)
        root_key = generate_key(f"file:{d}/root.key", _pass)
        root = create_root_ca(root_key, f"{name} Manufacturer Root CA", name)
        (d / "root.pem").write_text(certificate_pem(root))
        sk = generate_key(f"file:{d}/signing.key", _pass)
        cert = issue_firmware_signing_certificate(
            root_key, root, sk.public_key(), f"{name} Firmware Signing", name
        )
        (d / "signing.pem").write_text(certificate_pem(cert))
        return cls(d, root, d / "root.pem", sk, cert)

    def crl(self, revoked: Sequence[int], *, number: int = 1, now: dt.datetime) -> bytes:
        """A CRL (DER) from this root CA revoking ``revoked`` serials, valid from ``now``."""
        root_key = load_signer(f"file:{self.dir / 'root.key'}", _pass)
        return issue_crl(
            self.root_cert,
            root_key,
            [RevokedEntry(serial, now, "keyCompromise") for serial in revoked],
            crl_number=number,
            this_update=now,
            next_update=now + CRL_VALIDITY,
        )

    def bundle(
        self,
        out: Path,
        version: str,
        security_version: int,
        *,
        payload: bytes | None = None,
        models: list[str] | None = None,
        release_class: str = "feature",
        components: dict[str, bytes] | None = None,
        attested: bool = True,
        customer: str | None = None,
    ) -> Path:
        """A signed bundle; ``components`` maps component names to payloads (several images),
        else ``payload`` is the one ``main`` image.  ``attested``: with the SBOM and passing
        scan report that publication requires (test fixture: scanned against an empty
        advisory set)."""
        src = out.with_suffix(".payload")
        src.write_bytes(
            payload if payload is not None else (f"firmware {version}\n".encode() * 4096)
        )
        sources: Path | dict[str, Path] = src
        if components is not None:
            sources = {name: out.with_suffix(f".{name}.payload") for name in components}
            for name, path in sources.items():
                path.write_bytes(components[name])
        build_bundle(
            sources,
            out,
            version=version,
            security_version=security_version,
            hardware_models=models or [MODEL],
            signer=self.signing_signer,
            signing_certificate=self.signing_cert,
            release_class=release_class,
            customer=customer,
            attestations=(
                fixture_documents(version, sources if isinstance(sources, dict) else {"main": src})
                if attested
                else None
            ),
        )
        return out


def fixture_documents(version: str, images: dict[str, Path]) -> dict[str, bytes]:
    """SBOM and scan report for test bundles (no advisories: a clean, real scan report)."""
    components = image_components("test-firmware", version, "ACME", images, FIXTURE_LIBRARIES)
    made = release_documents(
        components, advisory_set([]), Allowlist(), threshold=Severity.HIGH, now=now()
    )
    return made.documents


FIXTURE_LIBRARIES = (
    Library("zlib", "1.3.1", "pkg:generic/zlib@1.3.1", "Zlib"),
    Library("mbedtls", "3.6.2", "pkg:github/Mbed-TLS/mbedtls@3.6.2", "Apache-2.0"),
)


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE, **(env or {})}
    r = subprocess.run(
        [sys.executable, "-m", "chargeward", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=timeout,
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"chargeward {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
    return r


def wait_for(pred: Any, timeout: float = 30, what: str = "condition", interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Server:
    data_dir: Path
    proc: Proc
    ocpp_url: str
    api_url: str
    token: str
    agents: list[Proc] = field(default_factory=list)
    ca: Path | None = None  # the lab CSMS CA when the HTTP listener speaks https

    @property
    def http(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if self.ca is not None:
            verify = ssl.create_default_context(cafile=self.ca)
        return httpx.Client(
            base_url=self.api_url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
            verify=verify,
        )

    def api(self, method: str, path: str, **kw: Any) -> Any:
        with self.http as c:
            r = c.request(method, path, **kw)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def upload(self, bundle: Path) -> dict[str, Any]:
        return dict(self.api("POST", "/api/v1/releases", content=bundle.read_bytes()))

    def station(self, station_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v1/stations/{station_id}"))

    def add_station(self, station_id: str, model: str = MODEL) -> str:
        out = cli(
            *("station", "add", station_id, "--model", model, "--data-dir", str(self.data_dir)),
            *("--security-profile", "1"),  # the test server runs plain ws (lab profile 1)
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("BasicAuthPassword:"))
        return line.split()[1]

    def start_agent(
        self,
        root: Path,
        pki: Pki,
        station_id: str,
        factory: Path,
        *,
        password: str | None = None,
        model: str = MODEL,
        tuf_root: Path | None = None,
        repository: str | None = None,
        customer: str | None = None,
        run_args: tuple[str, ...] = (),
    ) -> tuple[Proc, Path]:
        """Provision and start an agent.

        With ``tuf_root`` it checks the TUF repository at ``repository`` (default: this
        server's); ``customer`` provisions a customer lock.
        """
        password = password or self.add_station(station_id, model)
        tuf_init = ["--tuf-root", str(tuf_root)] if tuf_root else []
        tuf_init += ["--customer", customer] if customer else []
        repository = repository or f"{self.api_url}/tuf/"
        tuf_run = ["--repository", repository] if tuf_root else []
        state = root / f"state-{station_id}"
        cli(
            "agent",
            "init",
            "--state-dir",
            str(state),
            "--station-id",
            station_id,
            "--model",
            model,
            "--root",
            str(pki.root_pem),
            "--factory-bundle",
            str(factory),
            *tuf_init,
            env={"CHARGEWARD_STATION_PASSWORD": password},
        )
        proc = spawn(
            [
                "agent",
                "run",
                "--state-dir",
                str(state),
                "--csms",
                self.ocpp_url,
                "--reconnect-delay",
                "0.5",
                *("--reboot-delay", "0.5"),
                "--log-level",
                "info",
                *("--allow-location", "127.0.0.0/8"),  # the server is on 127.0.0.1: a lab setting
                *tuf_run,
                *run_args,
            ],
            root / f"agent-{station_id}.log",
        )
        self.agents.append(proc)
        return proc, state

    def wait_connected(self, station_id: str, timeout: float = 30) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (
                    (s := self.station(station_id))["connected"] and s["firmware_version"] and s
                ),
                timeout,
                f"{station_id} to connect",
            )
        )


@contextlib.contextmanager
def running_server(
    root: Path,
    pki: Pki,
    extra_env: dict[str, str] | None = None,
    public_url: str | None = None,
    extra_args: tuple[str, ...] = (),
    tls: LabTls | None = None,
) -> Iterator[Server]:
    """``chargeward server`` on loopback; with ``tls`` its HTTP listener speaks https with the
    lab certificate (``Server.ca`` is the CA to trust: ``SSL_CERT_FILE`` for the CLI)."""
    data = root / "server-data"
    env = {"CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE, **(extra_env or {})}
    proc, info = start_server(
        data,
        pki.root_pem,
        root / "server.log",
        env=env,
        public_url=public_url,
        extra_args=extra_args,
        tls=tls,
    )
    srv: Server | None = None
    try:
        token = (data / "admin.token").read_text().strip()
        ca = root / "server-data-https" / "csms-ca.pem" if tls is not None else None
        srv = Server(data, proc, info["ocpp_url"], info["api_url"], token, ca=ca)
        yield srv
    finally:
        for agent in srv.agents if srv else []:
            agent.stop()
        proc.stop()


def assert_no_crash(text: str) -> None:
    assert "Traceback" not in text, text[-4000:]


def basic(station_id: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{station_id}:{password}".encode()).decode()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
