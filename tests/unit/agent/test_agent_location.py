"""The agent's location policy: which CSMS-named URLs it may download from or upload to."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
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


# IANA special-purpose ranges, judged from the module's own table (not the Python version's
# ipaddress tables), and IPv6 forms that carry an IPv4 address judged by that address.
@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible ::/96 (RFC 4291 §2.5.5.1)
        ("http://[::a9fe:a9fe]/", "link-local"),
        ("http://[64:ff9b:1::a9fe:a9fe]/", "link-local"),  # RFC 8215 local-use NAT64
        ("http://[64:ff9b:1::cb00:7207]/", "reserved"),  # local-use: not globally reachable
        ("http://[2002:7f00:1::1]/", "loopback"),  # 6to4 of 127.0.0.1
        ("http://192.0.0.192/", "reserved"),  # 192.0.0.0/24, a cloud metadata address
        ("http://192.0.0.9/", "reserved"),
        ("http://0.1.2.3/", "reserved"),  # 0.0.0.0/8 "this network"
        ("http://192.88.99.1/", "reserved"),  # deprecated 6to4 relay anycast (RFC 7526)
        ("http://198.18.0.1/", "reserved"),  # benchmarking (RFC 2544)
        ("http://198.51.100.7/", "reserved"),  # documentation (RFC 5737)
        ("http://203.0.113.9/", "reserved"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "reserved"),
        ("http://[2001:db8::1]/", "reserved"),  # documentation (RFC 3849)
        ("http://[3fff::1]/", "reserved"),  # documentation (RFC 9637)
        ("http://[2001::1]/", "reserved"),  # Teredo, in 2001::/23 (RFC 2928)
        ("http://[100::1]/", "reserved"),  # discard-only (RFC 6666)
        ("http://[5f00::1]/", "reserved"),  # SRv6 SIDs (RFC 9602)
        ("http://[4000::1]/", "reserved"),  # outside 2000::/3, unallocated
        ("http://[fec0::1]/", "private"),  # site-local (deprecated, RFC 3879)
        ("http://[ff02::1]/", "multicast"),
    ],
)
def test_special_purpose_ranges_are_refused(url: str, rule: str) -> None:
    refusal = DEFAULT_POLICY.static_refusal(url)
    assert refusal is not None and refusal.rule == rule, (url, refusal)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:203.0.114.7]/",
        "http://[64:ff9b::cb00:7207]/",  # RFC 6052 well-known NAT64 of 203.0.114.7
        "http://[2002:cb00:7207::1]/",
        "http://192.31.196.1/",  # AS112: globally reachable per IANA
    ],
)
def test_global_addresses_in_ipv6_forms_are_allowed(url: str) -> None:
    assert DEFAULT_POLICY.static_refusal(url) is None


def test_the_decision_does_not_depend_on_python_ipaddress_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Python whose ipaddress tables call everything global changes nothing."""
    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for flag in ("is_global",):
            monkeypatch.setattr(cls, flag, property(lambda self: True))
        for flag in ("is_private", "is_reserved", "is_loopback", "is_link_local"):
            monkeypatch.setattr(cls, flag, property(lambda self: False))
    for url, rule in (
        ("http://127.0.0.1/", "loopback"),
        ("http://169.254.169.254/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://192.0.0.192/", "reserved"),
        ("http://10.0.0.1/", "private"),
    ):
        refusal = DEFAULT_POLICY.static_refusal(url)
        assert refusal is not None and refusal.rule == rule, (url, refusal)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254./latest/meta-data/", "link-local"),
        ("http://127.0.0.1./", "loopback"),
        ("http://localhost./admin", "loopback"),
        ("http://LOCALHOST/", "loopback"),
        ("http://api.localhost/", "loopback"),  # RFC 6761 §6.3
    ],
)
def test_trailing_dot_and_localhost_names_are_refused_statically(url: str, rule: str) -> None:
    refusal = DEFAULT_POLICY.static_refusal(url)
    assert refusal is not None and refusal.rule == rule, (url, refusal)


PROXY = "http://gateway.site:3128"
BY_NETWORK = LocationPolicy(allow_networks=("203.0.114.0/24",))  # production: an allowlist


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, BY_NETWORK], ids=["default", "by-network"])
@pytest.mark.parametrize(
    ("url", "rules"),
    [
        ("http://localhost./admin", {"loopback", "not-allowlisted"}),
        ("http://169.254.169.254./latest/meta-data/", {"link-local", "not-allowlisted"}),
        ("http://metadata.google.internal/computeMetadata/v1/", {"unresolved"}),
        ("http://intranet.corp/", {"unresolved"}),
    ],
)
async def test_through_a_proxy_names_that_do_not_resolve_here_are_refused(
    resolver: dict[str, list[str]], policy: LocationPolicy, url: str, rules: set[str]
) -> None:
    """Only the proxy could resolve these: the agent cannot tell where they lead."""
    with pytest.raises(LocationRefused) as e:
        await location.check(policy, url, proxy=PROXY)
    assert e.value.rule in rules, e.value


async def test_through_a_proxy_what_the_allowlist_names_still_passes(
    resolver: dict[str, list[str]],
) -> None:
    resolver["fw.acme.example"] = ["203.0.114.7"]
    resolver["elsewhere.example"] = ["198.252.206.1"]
    await location.check(DEFAULT_POLICY, "https://fw.acme.example/fw", proxy=PROXY)
    await location.check(BY_NETWORK, "https://fw.acme.example/fw", proxy=PROXY)
    with pytest.raises(LocationRefused, match="not-allowlisted"):
        await location.check(BY_NETWORK, "https://elsewhere.example/fw", proxy=PROXY)
    # A name on allow_hosts may be left to the proxy (only the gateway resolves it).
    by_name = LocationPolicy(allow_hosts=("*.vendor.example",))
    await location.check(by_name, "https://fw.vendor.example./fw", proxy=PROXY)
    with pytest.raises(LocationRefused, match="not-allowlisted"):
        await location.check(by_name, "https://intranet.corp/", proxy=PROXY)


def test_an_allowlist_covering_loopback_counts_as_the_lab_setting() -> None:
    assert LocationPolicy(allow_networks=("0.0.0.0/0",)).lab_loopback
    assert LocationPolicy(allow_networks=("::/0",)).lab_loopback
    assert not LocationPolicy(allow_networks=("10.0.0.0/8", "2001:4860::/32")).lab_loopback
