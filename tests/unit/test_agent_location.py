"""The agent's location policy: which CSMS-named URLs it may download from or upload to."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest

from chargeward.agent import download, location
from chargeward.agent.local_cache import FirmwareCache
from chargeward.agent.location import (
    DEFAULT_POLICY,
    LAB_LOOPBACK,
    LocationPolicy,
    LocationRefused,
)
from chargeward.cli.agent import location_policy
from chargeward.errors import ConfigError

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
        ("http://[2002:a9fe:a9fe::1]/", "link-local"),  # 6to4 of 169.254.169.254
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.20/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://100.64.0.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://192.0.2.1/", "reserved"),
        ("https://user:pw@firmware.example.com/", "credentials"),
        ("https://user@firmware.example.com/", "credentials"),
        ("ftp://firmware.example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
    ],
)
def test_default_policy_refuses(url: str, rule: str) -> None:
    refusal = DEFAULT_POLICY.static_refusal(url)
    assert refusal is not None and refusal.rule == rule, refusal
    with pytest.raises(LocationRefused) as e:
        DEFAULT_POLICY.check_url(url)
    assert e.value.rule == rule and rule in str(e.value)


@pytest.mark.parametrize(
    "url",
    ["https://firmware.example.com/fw.cwfw", "http://203.0.114.7/fw", "http://[2001:4860::8888]/"],
)
def test_default_policy_allows_public_locations(url: str) -> None:
    assert DEFAULT_POLICY.static_refusal(url) is None


def test_private_networks_only_when_allowed() -> None:
    assert LocationPolicy(allow_private=True).static_refusal("http://10.1.2.3/") is None
    refusal = LocationPolicy(allow_private=True).static_refusal("http://169.254.169.254/")
    assert refusal is not None and refusal.rule == "link-local"


def test_https_only() -> None:
    policy = LocationPolicy(https_only=True)
    refusal = policy.static_refusal("http://firmware.example.com/")
    assert refusal is not None and refusal.rule == "https-only"
    assert policy.static_refusal("https://firmware.example.com/") is None


def test_allowlist_is_exclusive_and_networks_override_refusals() -> None:
    policy = LocationPolicy(allow_hosts=("*.acme.example",), allow_networks=("10.20.0.0/16",))
    assert policy.static_refusal("http://10.20.3.4/fw") is None  # an allowed private network
    assert policy.static_refusal("https://fw.acme.example/") is None
    for url in ("http://10.21.0.1/", "https://203.0.114.7/", "http://169.254.169.254/"):
        refusal = policy.static_refusal(url)
        assert refusal is not None and refusal.rule == "not-allowlisted", url
    hosts_only = LocationPolicy(allow_hosts=("fw.acme.example",))
    refusal = hosts_only.static_refusal("https://evil.example/")
    assert refusal is not None and refusal.rule == "not-allowlisted"
    assert hosts_only.static_refusal("https://FW.acme.example./x") is None
    assert LAB_LOOPBACK.lab_loopback and not policy.lab_loopback
    with pytest.raises(ConfigError, match="location policy"):
        LocationPolicy(allow_networks=("not-a-network",))


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names resolve to what the test says (a DNS server the attacker controls)."""
    answers: dict[str, list[str]] = {}

    async def getaddrinfo(self: Any, host: str, port: int, **kw: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return answers


async def test_a_name_resolving_to_a_refused_address_is_refused(
    resolver: dict[str, list[str]],
) -> None:
    resolver["fw.acme.example"] = ["203.0.114.7", "169.254.169.254"]  # one bad answer is enough
    with pytest.raises(LocationRefused, match=r"link-local.*fw.acme.example resolves to 169"):
        await DEFAULT_POLICY.resolve("fw.acme.example", 80)
    # An allowlisted name is no way around it either.
    with pytest.raises(LocationRefused, match="link-local"):
        await LocationPolicy(allow_hosts=("fw.acme.example",)).resolve("fw.acme.example", 80)
    resolver["fw.acme.example"] = ["203.0.114.7"]
    assert await DEFAULT_POLICY.resolve("fw.acme.example", 80) == ["203.0.114.7"]


async def test_the_connection_goes_to_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the first answer passes the check, a second one would point at loopback.
    The backend resolves once and connects to the checked address."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])

    async def rebinding(self: Any, host: str, p: int, **kw: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, p)) for a in next(answers)]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", rebinding)
    backend = location.CheckedBackend(LAB_LOOPBACK)
    async with server:
        stream = await backend.connect_tcp("lab.test", port, timeout=2)
        assert stream.get_extra_info("server_addr")[0] == "127.0.0.1"
        await stream.aclose()


async def test_publish_firmware_to_a_refused_location_is_download_failed(tmp_path: Path) -> None:
    reports: list[tuple[str, int]] = []
    refused: list[tuple[str, LocationRefused]] = []

    async def notify(status: str, request_id: int, locations: list[str] | None) -> None:
        reports.append((status, request_id))

    async def on_refused(what: str, error: LocationRefused) -> None:
        refused.append((what, error))

    cache = FirmwareCache(tmp_path, "http://cache.site:8081", notify=notify, on_refused=on_refused)
    md5 = hashlib.md5(b"x", usedforsecurity=False).hexdigest()
    assert cache.publish("http://169.254.169.254/latest/meta-data", md5, 5, 0, 1) == "Accepted"
    cache.start(md5)
    await asyncio.wait_for(asyncio.gather(*cache._jobs.values()), 10)
    assert reports == [("Downloading", 5), ("DownloadFailed", 5)]  # OCPP L03
    assert [(w, e.rule) for w, e in refused] == [("PublishFirmware 5", "link-local")]


async def test_fetch_and_upload_refuse_before_connecting(tmp_path: Path) -> None:
    from chargeward.agent import upload

    with pytest.raises(LocationRefused, match="credentials"):
        await download.fetch(
            "https://u:p@fw.example/", tmp_path / "p", max_bytes=10, retries=0, retry_interval=0
        )
    with pytest.raises(LocationRefused, match="link-local"):
        await upload.upload("http://169.254.169.254/", "f", b"x", retries=0, retry_interval=0)
    assert upload.failure_status(LocationRefused("link-local", "x")) == "UploadFailure"


def test_cli_allow_location_splits_networks_and_hosts() -> None:
    policy = location_policy(
        ["10.0.0.0/8", "fw.acme.example", "::1"], allow_private=False, https_only=True
    )
    assert policy.allow_networks == ("10.0.0.0/8", "::1")
    assert policy.allow_hosts == ("fw.acme.example",)
    assert policy.https_only
