"""The limits objects (ADR 0030): every bound is positive, and the code that enforces a bound
reads it from the object it is given, on each side.

Each check gives a parser or a component a smaller limits object and shows it refusing a real
input that the default object accepts.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from chargeward.agent import certificates
from chargeward.agent.config import AgentConfig
from chargeward.agent.connection import retry_after
from chargeward.agent.state import StateDir
from chargeward.crypto.root_rotation import root_and_links
from chargeward.errors import BundleError, UntrustedCertificate
from chargeward.limits import (
    DEFAULT_AGENT_LIMITS,
    DEFAULT_FORMAT_LIMITS,
    DEFAULT_SERVER_LIMITS,
    AgentLimits,
    FormatLimits,
    ServerLimits,
)
from chargeward.release.manifest import Manifest, ManifestImage
from chargeward.server.http.limits import BodyLimit
from tests.support.crafted_certs import AT, ca_certificate, dn, new_key, pem

DEFAULTS = (DEFAULT_FORMAT_LIMITS, DEFAULT_AGENT_LIMITS, DEFAULT_SERVER_LIMITS)


@pytest.mark.parametrize("limits", DEFAULTS, ids=lambda o: type(o).__name__)
def test_every_limit_is_positive(limits: object) -> None:
    fields = dataclasses.fields(limits)  # type: ignore[arg-type]
    assert fields
    for f in fields:
        value = getattr(limits, f.name)
        zero = dt.timedelta(0) if isinstance(value, dt.timedelta) else 0
        assert value > zero, f.name


@pytest.mark.parametrize("limits", DEFAULTS, ids=lambda o: type(o).__name__)
def test_every_limit_is_in_the_docstring_table(limits: object) -> None:
    table = type(limits).__doc__ or ""
    missing = [f.name for f in dataclasses.fields(limits) if f.name not in table]  # type: ignore[arg-type]
    assert missing == []


def test_limits_objects_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_FORMAT_LIMITS.manifest_bytes = 1  # type: ignore[misc]


# -- formats, either side ------------------------------------------------------------------------


def _manifest_json() -> bytes:
    image = ManifestImage(
        component="main",
        path="images/main.cwfw",
        sha256="ab" * 32,
        length=10,
        signature=base64.b64encode(b"0" * 70).decode(),
    )
    manifest = Manifest(
        version="1.2.0",
        security_version=3,
        hardware_models=("AC22",),
        created="2026-11-21T10:00:00Z",
        notes="",
        images=(image,),
        signing_certificate_path="signing-certificate.pem",
    )
    return manifest.to_json()


def test_a_smaller_manifest_limit_refuses_a_manifest_the_default_accepts() -> None:
    raw = _manifest_json()
    assert Manifest.from_json(raw).version == "1.2.0"
    small = FormatLimits(manifest_bytes=len(raw) - 1)
    with pytest.raises(BundleError, match=f"the limit is {len(raw) - 1}"):
        Manifest.from_json(raw, limits=small)


def test_a_smaller_link_limit_refuses_a_bundle_the_default_accepts() -> None:
    old_key, new_key_ = new_key(), new_key()
    old = ca_certificate(old_key, name=dn((x509.NameOID.COMMON_NAME, "Old Root")))
    new = ca_certificate(new_key_, name=dn((x509.NameOID.COMMON_NAME, "New Root")))
    link = ca_certificate(new_key_, name=new.subject, issuer=(old.subject, old_key), path_length=0)
    certs = x509.load_pem_x509_certificates(pem(new, link))
    assert root_and_links(certs) == (new, [link])
    with pytest.raises(UntrustedCertificate, match="at most 0"):
        root_and_links(certs, limits=FormatLimits(root_links=0))


# -- the agent -----------------------------------------------------------------------------------


def _csms_root(name: str) -> str:
    cert = ca_certificate(new_key(), name=dn((x509.NameOID.COMMON_NAME, name)))
    return pem(cert).decode()


def test_a_smaller_root_store_answers_store_full_where_the_default_installs(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path)
    first = certificates.install_certificate(state, certificates.CSMS_ROOT, _csms_root("A"), AT)
    assert first.status == "Accepted"
    one_root = AgentLimits(roots_per_type=1)
    second = _csms_root("B")
    full = certificates.install_certificate(
        state, certificates.CSMS_ROOT, second, AT, limits=one_root
    )
    assert (full.status, full.reason_code) == ("Rejected", "StoreFull")
    done = certificates.install_certificate(state, certificates.CSMS_ROOT, second, AT)
    assert done.status == "Accepted"


def test_the_agent_config_carries_its_limits(tmp_path: Path) -> None:
    config = AgentConfig(tmp_path, "ws://csms", limits=AgentLimits(retry_after_s=60.0))
    assert AgentConfig(tmp_path, "ws://csms").limits is DEFAULT_AGENT_LIMITS
    assert retry_after("999999") == DEFAULT_AGENT_LIMITS.retry_after_s
    assert retry_after("999999", config.limits.retry_after_s) == 60.0


# -- the server ----------------------------------------------------------------------------------


def _echo_app(limits: ServerLimits) -> httpx.AsyncClient:
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    app = Starlette(routes=[Route("/api/v1/auth/login", echo, methods=["POST"])])
    app.add_middleware(BodyLimit, limits=limits)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server")


async def test_a_smaller_login_body_cap_refuses_a_login_the_default_accepts() -> None:
    body = b'{"username": "operator", "password": "' + b"x" * 2000 + b'"}'
    async with _echo_app(DEFAULT_SERVER_LIMITS) as client:
        taken = await client.post("/api/v1/auth/login", content=body)
    assert taken.text == str(len(body))
    async with _echo_app(ServerLimits(login_body_bytes=1024)) as client:
        refused = await client.post("/api/v1/auth/login", content=body)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "too_large"
