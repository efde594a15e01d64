"""``chargeward demo``: a manufacturer and an operator, end to end, on this machine.

Creates a PKI (Manufacturer Root CA + firmware-signing certificate, encrypted key files),
builds and signs a factory image and an update, starts the management server and several
reference chargers as separate processes talking OCPP 2.0.1 over loopback, uploads the
release, updates every charger, shows live progress and ends with a summary table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from chargeward.crypto import (
    certificate_pem,
    create_root_ca,
    generate_key,
    issue_firmware_signing_certificate,
)
from chargeward.errors import ChargewardError, TransportError
from chargeward.release.bundle import build_bundle
from chargeward.supply.advisories import AdvisorySet, advisory_set, load_advisories
from chargeward.supply.allowlist import Allowlist
from chargeward.supply.attest import image_components, release_documents
from chargeward.supply.components import Library
from chargeward.supply.severity import Severity

MODEL = "AC22"
FINAL = {
    "Installed",
    "DownloadFailed",
    "InstallationFailed",
    "InstallVerificationFailed",
    "InvalidSignature",
}


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


def start_server(
    data_dir: Path,
    root_pem: Path,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    public_url: str | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[Process, dict[str, Any]]:
    """Start ``chargeward server`` on free loopback ports; returns it and its server.json."""
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


def _progress_table(rows: dict[str, dict[str, Any]]) -> Table:
    t = Table(
        "station",
        "firmware",
        "connected",
        "last status",
        "outcome",
        title="Firmware update 1.0.0 -> 1.1.0",
    )
    for sid, d in rows.items():
        last = d["firmware_statuses"][-1]["status"] if d.get("firmware_statuses") else "-"
        outcome = d["updates"][-1]["outcome"] if d.get("updates") else "-"
        style = {"succeeded": "green", "failed": "red"}.get(outcome, "yellow")
        t.add_row(
            sid,
            d.get("firmware_version") or "-",
            "yes" if d.get("connected") else "no",
            last,
            f"[{style}]{outcome}[/]",
        )
    return t


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


def run_demo(
    workdir: Path, *, stations: int = 3, keep_running: bool = False, console: Console | None = None
) -> bool:
    console = console or Console()
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "pki").mkdir(parents=True)
    passphrase = secrets.token_urlsafe(18)  # protects this demo's generated keys only
    env = {"CHARGEWARD_KEY_PASSPHRASE": passphrase}

    console.rule("[bold]1. Manufacturer: keys, certificates, signed releases")
    signer, cert, root_pem = make_pki(workdir / "pki", passphrase.encode())
    console.print(f"Manufacturer Root CA and firmware-signing certificate in {workdir / 'pki'}")
    bundles = {}
    advisories = demo_advisories()
    for version, sv in (("1.0.0", 1), ("1.1.0", 2)):
        payload = workdir / f"firmware-{version}.bin"
        payload.write_bytes(os.urandom(256 * 1024) + f"demo firmware {version}\n".encode())
        out = workdir / f"demo-{version}.cwb"
        components = image_components(
            "demo-firmware", version, "Demo Chargers Ltd", {"main": payload}, DEMO_LIBRARIES
        )
        made = release_documents(
            components,
            advisories,
            Allowlist(),
            threshold=Severity.HIGH,
            now=dt.datetime.now(dt.UTC),
        )
        m = build_bundle(
            payload,
            out,
            version=version,
            security_version=sv,
            hardware_models=[MODEL],
            signer=signer,
            signing_certificate=cert,
            attestations=made.documents,
        )
        bundles[version] = out
        console.print(
            f"built and signed {out.name}: release {m.release_id[:12]}, security version {sv}; "
            f"SBOM of {made.gate.packages_checked} packages scanned against "
            f"{made.gate.advisory_count} OSV advisories: {len(made.gate.findings)} findings"
        )

    console.rule("[bold]2. TUF repository: 2-of-3 root holders, 2-of-3 release approvers")
    data = workdir / "server"
    tuf_root = make_repository(workdir / "tuf-keys", data, env)
    console.print(
        f"root keys held by {', '.join(ROOT_HOLDERS)} (2 of 3), releases approved by "
        f"{', '.join(APPROVERS)} (2 of 3); chargers get {tuf_root.name} at manufacture"
    )

    console.rule("[bold]3. Operator: management server and chargers")
    server, info = start_server(data, root_pem, workdir / "server.log", env=env)
    agents: list[Process] = []
    try:
        token = (data / "admin.token").read_text().strip()
        tokens = {
            who: run_cli(["token", "create", who, "--data-dir", str(data)]).split()[-1]
            for who in APPROVERS
        }
        console.print(f"server up: OCPP {info['ocpp_url']}{{stationId}}, API {info['api_url']}")
        ids = [f"DEMO-{i:03d}" for i in range(1, stations + 1)]
        for sid in ids:
            added = run_cli(
                [
                    *("station", "add", sid, "--model", MODEL),
                    *("--security-profile", "1", "--data-dir", str(data)),
                ]
            )
            password = added.split("BasicAuthPassword:")[1].split()[0]
            state = workdir / "chargers" / sid
            run_cli(
                [
                    "agent",
                    "init",
                    "--state-dir",
                    str(state),
                    "--station-id",
                    sid,
                    "--model",
                    MODEL,
                    "--root",
                    str(root_pem),
                    "--factory-bundle",
                    str(bundles["1.0.0"]),
                    "--tuf-root",
                    str(tuf_root),
                ],
                {"CHARGEWARD_STATION_PASSWORD": password},
            )
            agents.append(
                spawn(
                    [
                        "agent",
                        "run",
                        "--state-dir",
                        str(state),
                        "--csms",
                        str(info["ocpp_url"]),
                        "--reconnect-delay",
                        "1",
                        "--repository",
                        f"{info['api_url']}/tuf/",
                    ],
                    workdir / f"agent-{sid}.log",
                )
            )
        api = httpx.Client(
            base_url=str(info["api_url"]), timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

        def station(sid: str) -> dict[str, Any]:
            r = api.get(f"/api/v1/stations/{sid}")
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            return body

        deadline = time.monotonic() + 60
        while not all(station(s)["connected"] for s in ids):
            if time.monotonic() > deadline:
                raise TransportError("chargers did not connect within 60 s")
            time.sleep(0.2)
        console.print(f"{stations} chargers connected, all running 1.0.0")

        console.rule("[bold]4. Release 1.1.0: uploaded by carol, approved by alice and bob")
        as_carol = {**env, "CHARGEWARD_API_TOKEN": tokens["carol"]}
        run_cli(["release", "upload", str(bundles["1.1.0"]), "--data-dir", str(data)], as_carol)
        release = api.get("/api/v1/releases").json()[-1]
        rid = release["id"]
        console.print(
            f"release {release['version']} verified by the server (id {rid[:12]}): "
            f"{release['state']}"
        )
        for who in ("alice", "bob"):
            said = run_cli(
                [
                    "release",
                    "approve",
                    rid,
                    "--key",
                    f"file:{workdir / 'tuf-keys' / who}.key",
                    "--data-dir",
                    str(data),
                ],
                {**env, "CHARGEWARD_API_TOKEN": tokens[who]},
            )
            console.print(f"{who}: {said.strip().splitlines()[-1]}")
        said = run_cli(["release", "publish", rid, "--data-dir", str(data)], as_carol)
        console.print(said.strip().splitlines()[-1])

        console.rule("[bold]5. Update every charger (OCPP signature + TUF checked on each)")
        started = time.monotonic()
        for sid in ids:
            r = api.post(
                f"/api/v1/stations/{sid}/firmware-updates",
                json={"release_id": release["id"], "retry_interval": 2},
            )
            r.raise_for_status()
        rows = {s: station(s) for s in ids}
        with Live(_progress_table(rows), console=console, refresh_per_second=4) as live:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                rows = {s: station(s) for s in ids}
                live.update(_progress_table(rows))
                if all(
                    d["updates"] and d["updates"][-1]["outcome"] != "pending" for d in rows.values()
                ):
                    break
                time.sleep(0.25)
        elapsed = time.monotonic() - started

        console.rule("[bold]Summary")
        summary = Table(
            "station", "before", "after", "OCPP statuses (L01)", "security events", "outcome"
        )
        ok = True
        for sid, d in rows.items():
            statuses = " > ".join(e["status"] for e in d["firmware_statuses"])
            events = ", ".join(e["type"] for e in d["security_events"]) or "-"
            outcome = d["updates"][-1]["outcome"]
            ok = ok and outcome == "succeeded" and d["firmware_version"] == "1.1.0"
            summary.add_row(
                sid,
                d["boots"][0]["firmware_version"],
                d["firmware_version"],
                statuses,
                events,
                outcome,
            )
        console.print(summary)
        console.print(
            f"{sum(1 for d in rows.values() if d['updates'][-1]['outcome'] == 'succeeded')}"
            f"/{stations} chargers updated in {elapsed:.1f} s; audit trail at "
            f"{info['api_url']}/api/v1/audit"
        )
        if keep_running:
            console.print(
                f"server and chargers keep running; API docs at "
                f"{info['api_url']}/api/docs (token in {data / 'admin.token'}); "
                "press Ctrl-C to stop"
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return ok
    finally:
        for a in agents:
            a.stop()
        server.stop()
