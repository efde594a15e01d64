"""Where the charger may connect when the CSMS names a URL (ADR 0023).

UpdateFirmware, a delta offer, PublishFirmware and GetLog all carry a URL chosen by the CSMS.
Without a policy a compromised CSMS could make the charger fetch from (or upload its logs to)
the cloud metadata service (169.254.169.254), its own loopback services or the site's LAN.
:class:`LocationPolicy` (``AgentConfig.location_policy``) decides; by default it refuses

* credentials in the URL (``https://user:pw@host/``) and schemes other than HTTP(S)
  (HTTPS only with ``https_only``),
* loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10), unspecified,
  multicast and other non-global addresses,
* private networks (RFC 1918, RFC 6598 shared space, ULA fc00::/7) unless ``allow_private``,

and, when ``allow_hosts`` or ``allow_networks`` is set (production), everything that is not
on them.  An allowed network overrides the refusals above (a lab that serves from loopback
says so: :data:`LAB_LOOPBACK`); an allowed host name does not: the addresses it resolves to
are checked like any others.

Names are resolved once, every address is checked, and the connection goes to a checked
address (:class:`CheckedBackend`), so DNS rebinding cannot swap the address between check and
connect.  Through an HTTP proxy the proxy resolves the name; the agent still checks what the
name resolves to here, but the proxy's own egress rules must back this up.

    >>> policy = LocationPolicy(allow_hosts=("firmware.example.com",))
    >>> policy.static_refusal("http://169.254.169.254/latest/meta-data")
    Refusal(rule='link-local', detail='169.254.169.254 is a link-local address')
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from chargeward.errors import ConfigError, TransportError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SECURITY_EVENT = "RemoteLocationRefused"  # security log / SecurityEventNotification type

_PRIVATE: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: embeds an IPv4 address


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


def _embedded_v4(address: Address) -> Address:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


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
        return any(n.is_loopback for n in self.networks)

    def _host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for allowed in self.allow_hosts:
            allowed = allowed.lower().rstrip(".")
            if allowed.startswith("*."):
                if host.endswith(allowed[1:]):
                    return True
            elif host == allowed:
                return True
        return False

    def address_refusal(self, address: Address, *, name_allowed: bool = False) -> Refusal | None:
        """Why the charger may not connect to ``address`` (reached through a name on the
        allowlist when ``name_allowed``), or None."""
        if any(address in n for n in self.networks):
            return None
        plain = _embedded_v4(address)
        if plain != address and any(plain in n for n in self.networks):
            return None
        if self.restricted and not name_allowed:
            return Refusal("not-allowlisted", f"{address} is not on the location allowlist")
        for candidate in dict.fromkeys((plain, address)):
            for rule, hit in (
                ("loopback", candidate.is_loopback),
                ("link-local", candidate.is_link_local),
                ("unspecified", candidate.is_unspecified),
                ("multicast", candidate.is_multicast),
            ):
                if hit:
                    return Refusal(rule, f"{address} is a {rule} address".replace(" a u", " an u"))
            if any(candidate in n for n in _PRIVATE) or (
                isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local
            ):
                if not self.allow_private:
                    return Refusal("private", f"{address} is a private-network address")
            elif not candidate.is_global:
                return Refusal("reserved", f"{address} is not a global address")
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
        try:
            address = ipaddress.ip_address(parsed.host)
        except ValueError:
            if not self._host_allowed(parsed.host) and self.restricted and not self.networks:
                return Refusal("not-allowlisted", f"{parsed.host} is not on the allowlist")
            return None
        return self.address_refusal(address, name_allowed=self._host_allowed(parsed.host))

    def check_url(self, url: str) -> None:
        """Raise :class:`LocationRefused` for what :meth:`static_refusal` finds."""
        refusal = self.static_refusal(url)
        if refusal is not None:
            raise LocationRefused(refusal.rule, refusal.detail)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` to connect to, every one of them allowed.

        A name that resolves to any refused address is refused as a whole (a name pointing
        at the metadata service among others is hostile).
        """
        try:
            literal: Address | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses: Iterable[Address] = [literal]
        else:
            if self.restricted and not self._host_allowed(host) and not self.networks:
                raise LocationRefused("not-allowlisted", f"{host} is not on the allowlist")
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
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


def client(
    policy: LocationPolicy, *, timeout: float, proxy: str | None = None
) -> httpx.AsyncClient:
    """An HTTP client for CSMS-named URLs: direct connections go through
    :class:`CheckedBackend`.  Through a proxy the proxy connects; callers check the URL
    with :func:`check_before_proxy` first."""
    if proxy is not None:
        return httpx.AsyncClient(timeout=timeout, follow_redirects=False, proxy=proxy)
    transport = httpx.AsyncHTTPTransport()
    # httpx has no parameter for the network backend; its pool is rebuilt with the checked one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), network_backend=CheckedBackend(policy)
    )
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport)


async def check_before_proxy(policy: LocationPolicy, url: str) -> None:
    """Through a proxy: resolve the URL's host here and check it (the proxy resolves again,
    so its own egress rules must back this up)."""
    parsed = httpx.URL(url)
    try:
        await policy.resolve(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except httpcore.ConnectError:
        return  # only the proxy can resolve it: the URL's static checks and the proxy decide


async def check(policy: LocationPolicy, url: str, *, proxy: str | None) -> None:
    """Everything the policy can say before a request: the URL, and through a proxy the
    resolved addresses.  Direct connections are checked again as they are made."""
    policy.check_url(url)
    if proxy is not None:
        await check_before_proxy(policy, url)
