"""Vendors' own signed firmware (issue 31, ADR 0041): a vendor root registered for a model, the
vendor's image uploaded with its signature and certificate exactly as shipped, refused when
they do not verify under that root, listed in TUF, marked vendor-supplied in the evidence pack,
and sent to a third-party station (an ``ocpp`` library v201 ChargePoint on loopback that checks
the signature itself with ``cryptography`` against the vendor root, as a real charger would)
with signature and certificate byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from chargeward.audit.checkpoint import verifier_key
from chargeward.cli.main import app as cli_app
from chargeward.errors import NotFound
from chargeward.evidence import pack
from chargeward.server.fleet import station_registry
from chargeward.server.http.api import create_app
from chargeward.server.stations.csms import CsmsListener
from chargeward.server.store import tables
from tests.support.api_app import Api, running_api
from tests.support.evidence import COMMIT_A, junit
from tests.support.trust import TufKeys
from tests.support.vendor_pki import VendorPki, charger_accepts

MODEL = "AC22"
SID = "CP-VENDOR-1"
PASSWORD = "Station-Password-0123456789"
IMAGE = b"ACME firmware 4.2.0\x00" + bytes(range(256)) * 64  # a vendor's own format


@pytest.fixture(scope="module")
def acme() -> VendorPki:
    return VendorPki.create("ACME")


@pytest.fixture(scope="module")
def other() -> VendorPki:
    return VendorPki.create("Othervendor")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    (tmp_path / "tmp").mkdir()
    async with running_api(tmp_path, dt.datetime.now(dt.UTC)) as a:
        yield a


async def register(api: Api, vendor: VendorPki, model: str = MODEL) -> dict[str, Any]:
    found: dict[str, Any] = await api.call(
        "POST",
        "/api/v1/vendor-roots",
        201,
        params={"model": model},
        content=vendor.root_pem,
        headers={"Content-Type": "application/x-pem-file"},
    )
    return found


async def upload(
    api: Api,
    image: bytes,
    signature: str,
    certificate: str,
    *,
    model: str = MODEL,
    expect: int = 201,
    sbom: bytes | None = None,
) -> Any:
    files: dict[str, Any] = {"image": ("acme-4.2.0.bin", image, "application/octet-stream")}
    if sbom is not None:
        files["sbom"] = ("sbom.cdx.json", sbom, "application/json")
    return await api.call(
        "POST",
        "/api/v1/vendor-releases",
        expect,
        files=files,
        data={
            "signature": signature,
            "signing_certificate": certificate,
            "model": [model],
            "version": "4.2.0",
        },
    )


async def test_vendor_roots_are_registered_listed_removed_and_audited(
    api: Api, acme: VendorPki
) -> None:
    added = await register(api, acme)
    listed = await api.call("GET", "/api/v1/vendor-roots", params={"model": MODEL})
    assert [r["fingerprint"] for r in listed] == [added["fingerprint"]]
    again = await api.client.post(
        "/api/v1/vendor-roots", params={"model": MODEL}, content=acme.root_pem
    )
    assert again.status_code == 409
    leaf = await api.client.post(  # a signing certificate is no root
        "/api/v1/vendor-roots", params={"model": MODEL}, content=acme.signing_pem.encode()
    )
    assert leaf.status_code == 422 and "not a CA" in leaf.text
    await api.call("DELETE", f"/api/v1/vendor-roots/{MODEL}/{added['fingerprint']}", 204)
    assert await api.call("GET", "/api/v1/vendor-roots") == []
    actions = [e["action"] for e in await api.call("GET", "/api/v1/audit")]
    assert actions.count("vendor_root.add") == 1 and actions.count("vendor_root.remove") == 1


@pytest.mark.parametrize("use_rsa", [False, True], ids=["ecdsa", "rsa"])
async def test_vendor_image_is_stored_as_shipped(api: Api, use_rsa: bool) -> None:
    vendor = VendorPki.create("RSAvendor" if use_rsa else "ECvendor", use_rsa=use_rsa)
    await register(api, vendor)
    signature = vendor.sign(IMAGE)
    release = await upload(api, IMAGE, signature, vendor.signing_pem)
    assert release["provenance"] == "vendor-supplied"
    assert release["hardware_models"] == [MODEL] and release["version"] == "4.2.0"
    (image,) = release["images"]
    assert image["signature"] == signature
    assert (image["sha256"], image["length"]) == (hashlib.sha256(IMAGE).hexdigest(), len(IMAGE))
    assert api.state.blobs.path(image["sha256"]).read_bytes() == IMAGE  # byte for byte
    files = await api.call("GET", f"/api/v1/releases/{release['id']}/files")
    assert files["signing_certificate"] == vendor.signing_pem  # as shipped
    entries = await api.call("GET", "/api/v1/audit")
    upload_entry = next(e for e in entries if e["action"] == "release.upload")
    assert upload_entry["details"]["provenance"] == "vendor-supplied"
    assert upload_entry["details"]["sbom"] == "missing"
    await upload(api, IMAGE, signature, vendor.signing_pem, expect=409)  # the same image


async def test_signature_not_under_the_registered_root_is_refused(
    api: Api, acme: VendorPki, other: VendorPki
) -> None:
    await register(api, acme)
    tampered = IMAGE[:-1] + b"\x01"
    refused = await upload(api, tampered, acme.sign(IMAGE), acme.signing_pem, expect=422)
    assert refused["error"]["code"] == "untrusted"
    assert "signature does not verify" in refused["error"]["message"]
    # Signed and certified under another vendor's root: the certificate does not chain.
    refused = await upload(api, IMAGE, other.sign(IMAGE), other.signing_pem, expect=422)
    assert "not issued by" in refused["error"]["message"], refused
    # ACME's certificate with another vendor's signature: the signature does not verify.
    refused = await upload(api, IMAGE, other.sign(IMAGE), acme.signing_pem, expect=422)
    assert "signature does not verify" in refused["error"]["message"]
    # A model with no registered root.
    refused = await upload(api, IMAGE, acme.sign(IMAGE), acme.signing_pem, model="DC50", expect=422)
    assert "no vendor root is registered for model DC50" in refused["error"]["message"]
    assert await api.call("GET", "/api/v1/releases") == []


async def test_expired_signing_certificate_is_refused(api: Api) -> None:
    old = VendorPki.create(
        "Oldvendor", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=100), signing_days=30
    )
    await register(api, old)
    refused = await upload(api, IMAGE, old.sign(IMAGE), old.signing_pem, expect=422)
    assert "valid" in refused["error"]["message"], refused


async def test_tuf_proposal_lists_the_vendor_image(
    api: Api, acme: VendorPki, tmp_path: Path
) -> None:
    TufKeys.create(tmp_path / "keys").init_repo(api.state.repository.directory, api.clock())
    await register(api, acme)
    signature = acme.sign(IMAGE)
    release = await upload(api, IMAGE, signature, acme.signing_pem)
    proposal = await api.call("GET", f"/api/v1/releases/{release['id']}/proposal")
    (target,) = proposal["added"]
    assert target["path"].startswith(f"firmware/{MODEL}/4.2.0/main")
    assert (target["length"], target["sha256"]) == (len(IMAGE), hashlib.sha256(IMAGE).hexdigest())
    assert signature in str(target["custom"])  # the vendor's, as the approvers sign it


class _ServerAnswers:
    """The evidence pack's :class:`~chargeward.evidence.pack.Api`, answering from what the
    real server returned (it has no campaigns, approvals or checkpoint here)."""

    base = "http://test"

    def __init__(self, answers: dict[str, Any], documents: dict[str, str]) -> None:
        self.answers = answers
        self.documents = documents
        self.vkey = verifier_key("test/audit", hashlib.sha256(b"k").digest()).vkey

    def request(self, method: str, path: str, **kw: Any) -> Any:
        if method != "GET" or path not in self.answers:
            raise NotFound(f"{method} {path}")
        return self.answers[path]

    def text(self, method: str, path: str, **kw: Any) -> str:
        if path == "/api/v1/audit/vkey":
            return self.vkey
        if path in self.documents:
            return self.documents[path]
        raise NotFound(f"{method} {path}")


async def test_evidence_pack_marks_the_image_vendor_supplied(api: Api, acme: VendorPki) -> None:
    await register(api, acme)
    signature = acme.sign(IMAGE)
    release = await upload(api, IMAGE, signature, acme.signing_pem)
    rid = release["id"]
    answers = {
        "/api/v1/releases": await api.call("GET", "/api/v1/releases"),
        "/api/v1/campaigns": [],
        f"/api/v1/releases/{rid}/files": await api.call("GET", f"/api/v1/releases/{rid}/files"),
        f"/api/v1/releases/{rid}/approvals": [],
        "/api/v1/audit": [],
    }
    inputs = pack.Inputs("release", rid, junit({}), commit=COMMIT_A)
    evidence = pack.collect(_ServerAnswers(answers, {}), inputs)
    section = evidence.data["release"]
    assert section["provenance"] == "vendor-supplied"
    assert section["files"]["provenance"] == "vendor-supplied"
    assert section["files"]["supply_chain"]["sbom.cdx.json"]["present"] is False
    assert signature in str(section["files"]["manifest"])
    assert evidence.files["release/signing-certificate.pem"] == acme.signing_pem.encode()


class ThirdPartyStation(ChargePoint):
    """A charger of ACME's, not running Chargeward's agent: it checks the vendor signature of
    what it downloads itself (OCPP 2.0.1 L01), against the root its maker installed."""

    def __init__(self, *args: Any, root: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.root = root
        self.firmware: dict[str, Any] = {}
        self.downloaded = asyncio.get_running_loop().create_future()

    @on("UpdateFirmware")
    def on_update_firmware(self, request_id: int, firmware: dict[str, Any], **_: Any) -> Any:
        self.firmware = firmware
        return call_result.UpdateFirmware(status="Accepted")

    @after("UpdateFirmware")
    async def fetch(self, request_id: int, firmware: dict[str, Any], **_: Any) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(firmware["location"])
        image = r.content
        ok = charger_accepts(
            image,
            firmware["signature"],
            firmware["signing_certificate"],
            self.root,
            dt.datetime.now(dt.UTC),
        )
        self.downloaded.set_result((r.status_code, image, ok))


@dataclasses.dataclass
class Served:
    base: str
    server: uvicorn.Server


@pytest.fixture
async def served(api: Api) -> AsyncIterator[Served]:
    """The same server state over real HTTP on loopback, for the station's download."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(api.state), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    api.state.public_url = base
    try:
        yield Served(base, server)
    finally:
        server.should_exit = True
        await task


async def test_third_party_station_gets_the_vendor_signature_unchanged(
    api: Api, served: Served, acme: VendorPki
) -> None:
    await register(api, acme)
    signature = acme.sign(IMAGE)
    release = await upload(api, IMAGE, signature, acme.signing_pem)
    async with api.db.session() as s:
        await station_registry.register_station(
            s, SID, actor="test", model=MODEL, password=PASSWORD, now=api.clock()
        )
        (await s.get(tables.Station, SID)).security_profile = 1  # type: ignore[union-attr]
    listener = CsmsListener(api.db, api.state.registry, allow_profile_1=True)
    ocpp_server = await listener.serve("127.0.0.1", 0)
    port = next(iter(ocpp_server.sockets)).getsockname()[1]
    auth = base64.b64encode(f"{SID}:{PASSWORD}".encode()).decode()
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/{SID}",
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {auth}"},
            open_timeout=10,
        ) as ws:
            cp = ThirdPartyStation(SID, ws, response_timeout=10, root=acme.root)
            reader = asyncio.create_task(cp.start())
            try:
                await cp.call(
                    call.BootNotification(
                        charging_station={"model": MODEL, "vendor_name": "ACME"},
                        reason="PowerUp",
                    ),
                    suppress=False,
                )
                accepted = await api.call(
                    "POST",
                    f"/api/v1/stations/{SID}/firmware-updates",
                    202,
                    json={"release_id": release["id"]},
                )
                assert accepted["station_response"] == "Accepted"
                status, image, verified = await asyncio.wait_for(cp.downloaded, 10)
            finally:
                reader.cancel()
    finally:
        ocpp_server.close()
        await ocpp_server.wait_closed()
    assert cp.firmware["signature"] == signature  # byte for byte, never re-signed
    assert cp.firmware["signing_certificate"] == acme.signing_pem
    assert (status, image) == (200, IMAGE)
    assert verified  # the station's own check under ACME's root


async def test_cli_registers_the_root_and_uploads_the_vendor_image(
    api: Api, served: Served, acme: VendorPki, tmp_path: Path
) -> None:
    token = api.client.headers["Authorization"].removeprefix("Bearer ")
    (tmp_path / "root.pem").write_bytes(acme.root_pem)
    (tmp_path / "fw.bin").write_bytes(IMAGE)
    signature = acme.sign(IMAGE)
    (tmp_path / "fw.sig").write_text(signature + "\n")
    (tmp_path / "signing.pem").write_text(acme.signing_pem)
    common = ["--data-dir", str(tmp_path), "--server", served.base]

    async def chargeward(*args: str) -> str:
        result = await asyncio.to_thread(
            CliRunner().invoke, cli_app, list(args), env={"CHARGEWARD_API_TOKEN": token}
        )
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    out = await chargeward(
        "vendor-root", "add", "--model", MODEL, "--cert", str(tmp_path / "root.pem"), *common
    )
    assert "Registered vendor root" in out
    assert MODEL in await chargeward("vendor-root", "list", *common)
    out = await chargeward(
        "release", "upload-vendor", str(tmp_path / "fw.bin"), "--model", MODEL,
        "--version", "4.2.0", "--signature", str(tmp_path / "fw.sig"),
        "--signing-cert", str(tmp_path / "signing.pem"), *common,
    )  # fmt: skip
    assert "vendor-supplied" in out and "sbom: missing" in out
    (release,) = await api.call("GET", "/api/v1/releases")
    assert release["images"][0]["signature"] == signature
