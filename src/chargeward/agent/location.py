"""Where the charger may connect when the CSMS names a URL (ADR 0023).

UpdateFirmware, a delta offer, PublishFirmware and GetLog all carry a URL chosen by the CSMS.
Without a policy a compromised CSMS could make the charger fetch from (or upload its logs to)
the cloud metadata service (169.254.169.254), its own loopback services or the site's LAN.
:class:`LocationPolicy` (``AgentConfig.location_policy``) decides; by default it refuses

* credentials in the URL (``https://user:pw@host/``) and schemes other than HTTP(S)
  (HTTPS only with ``https_only``),
* loopback (127.0.0.0/8, ::1, ``localhost`` and ``*.localhost`` names), link-local
  (169.254.0.0/16, fe80::/10), unspecified, multicast, every other range the IANA
  special-purpose registries mark not globally reachable, and IPv6 outside 2000::/3
  (:data:`SPECIAL_PURPOSE`: an explicit table, so the decision does not change with the
  Python version's ``ipaddress`` tables),
* private networks (RFC 1918, RFC 6598 shared space, ULA fc00::/7) unless ``allow_private``,

and, when ``allow_hosts`` or ``allow_networks`` is set (production), everything that is not
on them.  An allowed network overrides the refusals above (a lab that serves from loopback
says so: :data:`LAB_LOOPBACK`); an allowed host name does not: the addresses it resolves to
are checked like any others.

Names are resolved once, every address is checked, and the connection goes to a checked
address (:class:`CheckedBackend`), so DNS rebinding cannot swap the address between check and
connect.  IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4,
NAT64) are judged by that address too; a trailing dot changes nothing (``localhost.`` is
``localhost``).  Through an HTTP proxy the proxy resolves the name; the agent resolves and
checks it here first and refuses a name it cannot resolve (rule ``unresolved``) unless the
name is on ``allow_hosts``; the proxy's own egress rules must back this up.

    >>> LocationPolicy().static_refusal("http://169.254.169.254./latest/meta-data").rule
    'link-local'
    >>> policy = LocationPolicy(allow_hosts=("firmware.example.com",))
    >>> policy.static_refusal("https://metadata.example/").rule
    'not-allowlisted'
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from chargeward.errors import ConfigError, TransportError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SECURITY_EVENT = "RemoteLocationRefused"  # security log / SecurityEventNotification type


def _table(*rows: tuple[str, str, str]) -> tuple[tuple[Network, str, str], ...]:
    return tuple((ipaddress.ip_network(n), rule, why) for n, rule, why in rows)


# IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890, updated by RFC 8190) and
# the multicast and IPv6 address-space registries, as of 2025: every range that is not
# globally reachable, with the rule that refuses it.  Most specific first.  Blocks are refused
# whole even where IANA marks one address in them reachable (the PCP and TURN anycast
# addresses in 192.0.0.0/24 and 2001::/23, AMT, ORCHIDv2, drone remote ID): no firmware store
# lives there.  Left allowed, being globally reachable: AS112 (192.31.196.0/24,
# 192.175.48.0/24, 2620:4f:8000::/48) and AMT relay anycast 192.52.193.0/24.  The prefixes
# that carry an IPv4 address (::ffff:0:0/96, ::/96, 2002::/16, 64:ff9b::/96,
# 64:ff9b:1::/48) are judged by that address (:func:`_embedded_v4`).
SPECIAL_PURPOSE: tuple[tuple[Network, str, str], ...] = _table(
    ("0.0.0.0/32", "unspecified", "this host (RFC 1122 §3.2.1.3)"),
    ("0.0.0.0/8", "reserved", "this network (RFC 791)"),
    ("10.0.0.0/8", "private", "private-use (RFC 1918)"),
    ("100.64.0.0/10", "private", "shared address space (RFC 6598)"),
    ("127.0.0.0/8", "loopback", "loopback (RFC 1122 §3.2.1.3)"),
    ("169.254.0.0/16", "link-local", "link-local (RFC 3927)"),
    ("172.16.0.0/12", "private", "private-use (RFC 1918)"),
    ("192.0.0.0/24", "reserved", "IETF protocol assignments (RFC 6890 §2.1)"),
    ("192.0.2.0/24", "reserved", "documentation, TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "reserved", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private", "private-use (RFC 1918)"),
    ("198.18.0.0/15", "reserved", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "reserved", "documentation, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "reserved", "documentation, TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast", "multicast (RFC 5771)"),
    ("255.255.255.255/32", "reserved", "limited broadcast (RFC 919)"),
    ("240.0.0.0/4", "reserved", "reserved (RFC 1112)"),
    ("::/128", "unspecified", "unspecified (RFC 4291 §2.5.2)"),
    ("::1/128", "loopback", "loopback (RFC 4291 §2.5.3)"),
    ("64:ff9b:1::/48", "reserved", "local-use IPv4/IPv6 translation (RFC 8215)"),
    ("100::/64", "reserved", "discard-only (RFC 6666)"),
    ("100:0:0:1::/64", "reserved", "dummy IPv6 prefix (RFC 9780)"),
    ("2001::/23", "reserved", "IETF protocol assignments (RFC 2928), Teredo 2001::/32"),
    ("2001:db8::/32", "reserved", "documentation (RFC 3849)"),
    ("3fff::/20", "reserved", "documentation (RFC 9637)"),
    ("5f00::/16", "reserved", "segment routing SIDs (RFC 9602)"),
    ("fc00::/7", "private", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local", "link-local unicast (RFC 4291 §2.5.6)"),
    ("fec0::/10", "private", "site-local, deprecated (RFC 3879)"),
    ("ff00::/8", "multicast", "multicast (RFC 4291 §2.7)"),
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")  # RFC 4291 §2.4; the rest is unallocated
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # RFC 4291 §2.5.5.2
_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291 §2.5.5.1 (deprecated)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 §2.1
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215; prefix length is local
_6TO4 = ipaddress.ip_network("2002::/16")  # RFC 3056 §2
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_LOCALHOST = ipaddress.ip_address("127.0.0.1")


def _special(address: Address) -> tuple[str, str] | None:
    """The rule and registry entry that refuse ``address`` (the table above), or None."""
    for network, rule, why in SPECIAL_PURPOSE:
        if address.version == network.version and address in network:
            return rule, why
    carrier = any(address in n for n in (_MAPPED, _COMPATIBLE, _NAT64, _6TO4))
    if address.version == 6 and address not in _GLOBAL_UNICAST_V6 and not carrier:
        return "reserved", "outside global unicast 2000::/3 (RFC 4291 §2.4)"
    return None


def _normalise_host(host: str) -> str:
    """``host`` as compared and resolved: lower case, no brackets, no trailing dot."""
    return host.strip("[]").rstrip(".").lower()


def _literal(host: str) -> Address | None:
    """The address ``host`` spells (``[::1]``, ``127.0.0.1.``), or None for a name."""
    try:
        return ipaddress.ip_address(_normalise_host(host))
    except ValueError:
        return None


def _is_localhost(host: str) -> bool:
    """``localhost`` and names under it are loopback whatever DNS says (RFC 6761 §6.3)."""
    return host == "localhost" or host.endswith(".localhost")


class LocationRefused(TransportError):
    """A URL the location policy refuses; ``rule`` names the rule (never retried)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"location refused ({rule}): {detail}")
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True)
class Refusal:
    rule: str
    detail: str


def _embedded_v4(address: Address) -> tuple[ipaddress.IPv4Address | None, bool]:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, IPv4-compatible, 6to4, NAT64)
    and whether that address is exact: in 64:ff9b:1::/48 the site chooses the prefix length
    (RFC 6052 §2.2), so the last 32 bits are only one reading, good for refusing, never for
    allowing."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None, False
    last32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _MAPPED or address in _NAT64:
        return last32, True
    if address in _COMPATIBLE and int(address) > 1:  # not :: or ::1
        return last32, True
    if address in _6TO4:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF), True
    if address in _NAT64_LOCAL:
        return last32, False
    return None, False


@dataclass(frozen=True)
class LocationPolicy:
    """Which URLs the CSMS may send the charger to (see the module docstring)."""

    allow_hosts: tuple[str, ...] = ()  # DNS names; "*.example.com" allows its subdomains
    allow_networks: tuple[str, ...] = ()  # CIDR, e.g. "203.0.113.0/24"; overrides refusals
    allow_private: bool = False  # RFC 1918 / RFC 6598 / ULA addresses
    allow_credentials: bool = False  # user:password@ in the URL
    https_only: bool = False

    def __post_init__(self) -> None:
        try:
            self.networks  # noqa: B018 (validates the CIDR strings)
        except ValueError as e:
            raise ConfigError(f"location policy: {e}") from e

    @property
    def networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_networks)

    @property
    def restricted(self) -> bool:
        """An allowlist is set: only what it names is allowed."""
        return bool(self.allow_hosts or self.allow_networks)

    @property
    def lab_loopback(self) -> bool:
        """Loopback is allowlisted: a lab or test setting, never a production one."""
        return any(
            n.version == loop.version and n.overlaps(loop)
            for n in self.networks
            for loop in _LOOPBACK
        )

    def _host_allowed(self, host: str) -> bool:
        host = _normalise_host(host)
        for allowed in self.allow_hosts:
            allowed = _normalise_host(allowed)
            if allowed.startswith("*."):
                if host.endswith(allowed[1:]):
                    return True
            elif host == allowed:
                return True
        return False

    def _network_allowed(self, address: Address) -> bool:
        embedded, exact = _embedded_v4(address)
        candidates = (address, embedded) if embedded is not None and exact else (address,)
        return any(c in n for c in candidates for n in self.networks)

    def address_refusal(self, address: Address, *, name_allowed: bool = False) -> Refusal | None:
        """Why the charger may not connect to ``address`` (reached through a name on the
        allowlist when ``name_allowed``), or None."""
        if self._network_allowed(address):
            return None
        if self.restricted and not name_allowed:
            return Refusal("not-allowlisted", f"{address} is not on the location allowlist")
        embedded, _ = _embedded_v4(address)
        for candidate in (address,) if embedded is None else (embedded, address):
            hit = _special(candidate)
            if hit is None:
                continue
            rule, why = hit
            if rule == "private" and self.allow_private:
                continue
            what = {
                "private": "a private-network address",
                "reserved": "not a global address",
                "unspecified": "an unspecified address",
            }.get(rule, f"a {rule} address")
            return Refusal(rule, f"{address} is {what}: {why}")
        return None

    def name_refusal(self, host: str) -> Refusal | None:
        """What a host name alone breaks: ``localhost`` names (RFC 6761 §6.3) and, with an
        allowlist of names only, a name not on it."""
        name = _normalise_host(host)
        if _is_localhost(name):
            refusal = self.address_refusal(_LOCALHOST, name_allowed=self._host_allowed(name))
            if refusal is not None and refusal.rule == "loopback":
                return Refusal("loopback", f"{host} is a loopback name (RFC 6761 §6.3)")
            return refusal
        if self.restricted and not self.networks and not self._host_allowed(name):
            return Refusal("not-allowlisted", f"{host} is not on the allowlist")
        return None

    def static_refusal(self, url: str) -> Refusal | None:
        """What the URL alone breaks (scheme, credentials, a literal address, a name not on
        the allowlist); names are checked again after resolution (:meth:`resolve`)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as e:
            return Refusal("malformed", str(e))
        if parsed.scheme not in ("http", "https") or not parsed.host:
            return Refusal("scheme", "not an HTTP(S) URL with a host")
        if self.https_only and parsed.scheme != "https":
            return Refusal("https-only", "the location policy allows only https://")
        if parsed.userinfo and not self.allow_credentials:  # credentials leak to logs, proxies
            return Refusal("credentials", "credentials in the URL are refused")
        if not _normalise_host(parsed.host):
            return Refusal("malformed", f"no host name in {parsed.host!r}")
        address = _literal(parsed.host)
        if address is None:
            return self.name_refusal(parsed.host)
        return self.address_refusal(address, name_allowed=self._host_allowed(parsed.host))

    def check_url(self, url: str) -> None:
        """Raise :class:`LocationRefused` for what :meth:`static_refusal` finds."""
        refusal = self.static_refusal(url)
        if refusal is not None:
            raise LocationRefused(refusal.rule, refusal.detail)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` to connect to, every one of them allowed.

        A name that resolves to any refused address is refused as a whole (a name pointing
        at the metadata service among others is hostile).  Raises httpcore.ConnectError
        when the name does not resolve.
        """
        literal = _literal(host)
        if literal is not None:
            addresses: Iterable[Address] = [literal]
        else:
            refusal = self.name_refusal(host)
            if refusal is not None:
                raise LocationRefused(refusal.rule, refusal.detail)
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    _normalise_host(host), port, type=socket.SOCK_STREAM
                )
            except OSError as e:
                raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        ordered = list(dict.fromkeys(addresses))
        if not ordered:
            raise httpcore.ConnectError(f"{host} has no address")
        name_allowed = self._host_allowed(host)
        for address in ordered:
            refusal = self.address_refusal(address, name_allowed=name_allowed)
            if refusal is not None:
                detail = (
                    refusal.detail if literal else f"{host} resolves to {address}: {refusal.detail}"
                )
                raise LocationRefused(refusal.rule, detail)
        return [str(a) for a in ordered]


DEFAULT_POLICY = LocationPolicy()
# Test fixtures, the simulator and the demo serve firmware from 127.0.0.1: a deliberate lab
# setting (the agent logs a warning when loopback is allowed).
LAB_LOOPBACK = LocationPolicy(allow_networks=("127.0.0.0/8", "::1/128"))


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows: the
    name is resolved here once and the socket opened to the checked address (TLS still
    verifies the certificate against the name)."""

    def __init__(self, policy: LocationPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception | None = None
        for address in await self._policy.resolve(host, port):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise LocationRefused("scheme", "no Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def tls_context(csms_roots: bytes | None = None) -> ssl.SSLContext:
    """The TLS context of https downloads, uploads and TUF fetches: the system CAs and,
    when given, the charger's CSMS roots (``secure/csms-roots.pem``), so a CSMS serving its
    HTTP listener with the certificate of its OCPP listener is trusted (ADR 0025).  httpx's
    defaults otherwise: TLS 1.2+, hostname and chain checked."""
    ctx = httpx.create_ssl_context()
    if csms_roots:
        try:
            ctx.load_verify_locations(cadata=csms_roots.decode("ascii"))
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"the CSMS root certificates are not readable PEM: {e}") from e
    return ctx


def client(
    policy: LocationPolicy,
    *,
    timeout: float,
    proxy: str | None = None,
    csms_roots: bytes | None = None,
) -> httpx.AsyncClient:
    """An HTTP client for CSMS-named URLs: direct connections go through
    :class:`CheckedBackend`.  Through a proxy the proxy connects; callers check the URL
    with :func:`check_before_proxy` first.  https is verified against the system CAs and
    ``csms_roots`` (:func:`tls_context`)."""
    ctx = tls_context(csms_roots)
    if proxy is not None:
        return httpx.AsyncClient(timeout=timeout, follow_redirects=False, proxy=proxy, verify=ctx)
    transport = httpx.AsyncHTTPTransport()
    # httpx has no parameter for the network backend; its pool is rebuilt with the checked one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ctx, network_backend=CheckedBackend(policy)
    )
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport)


async def check_before_proxy(policy: LocationPolicy, url: str) -> None:
    """Through a proxy: resolve the URL's host here and check it (the proxy resolves again,
    so its own egress rules must back this up).  A name that does not resolve here could
    lead anywhere once the proxy resolves it: it is refused unless it is on ``allow_hosts``
    (a site where only the gateway resolves outside names says which ones it trusts)."""
    parsed = httpx.URL(url)
    try:
        await policy.resolve(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except httpcore.ConnectError as e:
        if policy.allow_hosts and policy._host_allowed(parsed.host):
            return  # an allowed name the proxy resolves: its egress rules decide the address
        raise LocationRefused(
            "unresolved",
            f"{parsed.host} does not resolve here ({e}); through a proxy only names on the "
            "allowlist's hosts are left to the proxy",
        ) from e


async def check(policy: LocationPolicy, url: str, *, proxy: str | None) -> None:
    """Everything the policy can say before a request: the URL, and through a proxy the
    resolved addresses.  Direct connections are checked again as they are made."""
    policy.check_url(url)
    if proxy is not None:
        await check_before_proxy(policy, url)
