"""The HTTP listener as a perimeter: TLS, where it may listen, whose forwarded headers count.

The REST API, the dashboard, firmware downloads, log uploads and ``/tuf/`` share one listener
(ADR 0025):

- **TLS.** With ``--http-tls-cert/--http-tls-key`` (default: the OCPP ``--tls-cert/--tls-key``)
  the listener speaks TLS 1.2 or 1.3 only (:func:`http_server_context`), every URL the server
  hands out is ``https://``, cookies are ``Secure`` and every https response carries HSTS.
- **Binding.** Without TLS the listener stays on loopback (a reverse proxy on the same host)
  unless the lab flag ``--allow-insecure-http`` is given (:func:`check_http_binding`).
- **Reverse proxies.** ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from a
  peer in ``--trusted-proxy`` (default: nobody).  The client is the rightmost address in
  ``X-Forwarded-For`` that is not itself a trusted proxy (:class:`HttpPerimeter`).
- **Certificate reload.** SIGHUP, or a changed certificate or key file (checked every
  ``reload_interval`` seconds), loads the new pair into the live contexts (HTTP and OCPP);
  existing connections keep theirs, a bad pair keeps the old one (:class:`CertificateReloader`).

    check_http_binding("0.0.0.0", tls=False, allow_insecure_http=False)
    # raises chargeward.errors.ConfigError: the HTTP listener would serve 0.0.0.0 without TLS ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chargeward.crypto.keys import PassphraseSource
from chargeward.crypto.tls import OCPP_TLS12_CIPHERS, check_tls_key_uri, restrict_to_ocpp_tls
from chargeward.errors import ChargewardError, ConfigError

LOG = logging.getLogger("chargeward.server")

HSTS = "max-age=31536000"  # one year (RFC 6797); no includeSubDomains: the host may share a domain
# The dashboard's policy (server/web.py), for every response that does not set its own.
DEFAULT_CSP = "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
# TLS 1.2 suites of the HTTP listener: OCPP's (A00) plus ECDHE-RSA AES-GCM for an RSA
# certificate, so a browser gets forward secrecy with either key type.  TLS 1.3: OpenSSL's.
HTTP_TLS12_CIPHERS = OCPP_TLS12_CIPHERS + ":ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HttpSecurity:
    """The HTTP listener's settings (``chargeward server`` options)."""

    tls_certificate: Path | None = None  # default: the OCPP certificate, when given
    tls_key: str | None = None
    allow_insecure_http: bool = False  # plain HTTP beyond loopback: a lab only
    trusted_proxies: tuple[str, ...] = ()  # IPs/CIDRs whose X-Forwarded-* headers count
    reload_interval: float = 60.0  # seconds between checks of the certificate files; 0: never


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``; any other name or address is beyond loopback."""
    h = host.strip().strip("[]").lower().rstrip(".")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_http_binding(host: str, *, tls: bool, allow_insecure_http: bool) -> None:
    """Refuse plain HTTP beyond loopback unless the lab flag is given (then warn loudly)."""
    if tls or is_loopback(host):
        return
    if not allow_insecure_http:
        raise ConfigError(
            f"the HTTP listener would serve {host} without TLS: passwords, TOTP codes, tokens, "
            "session cookies and signed links would cross the network in clear text. Give "
            "--http-tls-cert and --http-tls-key (or --tls-cert/--tls-key), listen on 127.0.0.1 "
            "behind a TLS reverse proxy (--trusted-proxy), or --allow-insecure-http for a lab "
            "network"
        )
    LOG.warning(
        "INSECURE HTTP: the REST API, dashboard and downloads on %s run WITHOUT TLS; "
        "passwords, tokens and session cookies cross the network in clear text. Use this "
        "only on an isolated lab network.",
        host,
    )


def check_public_url(public_url: str | None, *, tls: bool, allow_insecure_http: bool) -> None:
    """A ``--public-url`` must be an http(s) base URL, and ``https://`` when the listener
    serves TLS (download and log-upload links would otherwise go out in clear text)."""
    if public_url is None:
        return
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--public-url must be an http(s):// base URL, got {public_url!r}")
    if parts.scheme == "https":
        return
    if tls:
        raise ConfigError(
            f"--public-url {public_url} is http:// while the HTTP listener serves TLS: "
            "stations would fetch firmware and upload logs in clear text; give https://"
        )
    if not is_loopback(parts.hostname):
        if not allow_insecure_http:
            raise ConfigError(
                f"--public-url {public_url} sends stations to plain HTTP beyond loopback; "
                "give an https:// URL (the TLS reverse proxy's) or --allow-insecure-http for "
                "a lab network"
            )
        LOG.warning("INSECURE HTTP: stations download from %s in clear text", public_url)


def http_tls_files(
    http: HttpSecurity, ocpp_certificate: Path | None, ocpp_key: str | None
) -> tuple[Path, str] | None:
    """The HTTP listener's (certificate, key URI): its own, else the OCPP pair, else None."""
    if http.tls_certificate is not None or http.tls_key is not None:
        if http.tls_certificate is None or http.tls_key is None:
            raise ConfigError("HTTP TLS needs both --http-tls-cert and --http-tls-key")
        return http.tls_certificate, http.tls_key
    if ocpp_certificate is not None and ocpp_key is not None:
        return ocpp_certificate, ocpp_key
    return None


def load_pair(
    ctx: ssl.SSLContext, certificate: Path, key: str, passphrase: PassphraseSource
) -> None:
    from chargeward.server.stations.tls import load_certificate_and_key

    load_certificate_and_key(ctx, certificate, key, passphrase)


def http_server_context(
    certificate: Path, key: str, passphrase: PassphraseSource
) -> ssl.SSLContext:
    """TLS 1.2+ for the HTTP listener (the OCPP policy, with ECDHE-RSA GCM suites added)."""
    ctx = restrict_to_ocpp_tls(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.set_ciphers(HTTP_TLS12_CIPHERS)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    load_pair(ctx, certificate, key, passphrase)
    return ctx


class UvicornConfig(uvicorn.Config):
    """uvicorn's configuration with Chargeward's own ``SSLContext`` (``tls``): the key goes
    through Chargeward's key loader, and the reloader swaps certificates in this very object."""

    def __init__(self, *args: Any, tls: ssl.SSLContext | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.tls = tls

    def load(self) -> None:
        super().load()
        if self.tls is not None:
            self.ssl = self.tls


# -- certificate reload -----------------------------------------------------------------------


@dataclass
class CertificateSlot:
    """One live context and the files its certificate chain and key come from."""

    name: str  # "HTTP" or "OCPP", for the log
    ctx: ssl.SSLContext
    certificate: Path
    key: str
    stamp: tuple[object, ...] = field(default=())

    def files(self) -> tuple[Path, Path]:
        return self.certificate, Path(check_tls_key_uri(self.key))

    def current_stamp(self) -> tuple[object, ...]:
        out: list[object] = []
        for p in self.files():
            try:
                st = p.stat()
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)


class CertificateReloader:
    """Loads changed certificate/key pairs into the live TLS contexts.

    New connections get the new certificate, open ones keep the one they were made with
    (OpenSSL copies the certificate into each connection).  The new pair is tried on a
    scratch context first: a missing file, a wrong passphrase or a key that does not match
    keeps the old pair and logs an error.
    """

    def __init__(
        self,
        slots: Iterable[CertificateSlot],
        passphrase: PassphraseSource,
        *,
        interval: float = 60.0,
    ) -> None:
        self.slots = list(slots)
        self.passphrase = passphrase
        self.interval = interval
        self.reloads = 0  # pairs loaded since start
        self.failures = 0  # pairs refused since start
        for slot in self.slots:
            slot.stamp = slot.current_stamp()

    def reload(self, slots: Sequence[CertificateSlot] | None = None) -> bool:
        """Reload ``slots`` (default: all); True when every one took the new pair."""
        ok = True
        for slot in self.slots if slots is None else slots:
            slot.stamp = slot.current_stamp()
            with tempfile.TemporaryDirectory(prefix=".tls-reload-") as tmp:
                try:
                    chain = Path(tmp) / "chain.pem"  # one read: both loads see the same bytes
                    chain.write_bytes(slot.certificate.read_bytes())
                    load_pair(
                        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), chain, slot.key, self.passphrase
                    )
                    load_pair(slot.ctx, chain, slot.key, self.passphrase)
                except (OSError, ChargewardError) as e:
                    ok = False
                    self.failures += 1
                    LOG.error(
                        "%s TLS certificate not reloaded, keeping the old one: %s", slot.name, e
                    )
                    continue
            self.reloads += 1
            LOG.info("%s TLS certificate reloaded from %s", slot.name, slot.certificate)
        return ok

    def check(self) -> bool:
        """Reload the slots whose certificate or key file changed; True if any did."""
        changed = [s for s in self.slots if s.current_stamp() != s.stamp]
        if changed:
            self.reload(changed)
        return bool(changed)

    async def watch(self) -> None:
        """Check the files every ``interval`` seconds, forever (no-op when 0 or no slots)."""
        if not self.slots or self.interval <= 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def on_sighup(self) -> bool:
        """Reload on SIGHUP (main thread, Unix); False where signals cannot be handled."""
        if not self.slots:
            return False
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            return False
        return True

    def remove_sighup(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


# -- forwarded headers, HSTS, CSP -------------------------------------------------------------


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``--trusted-proxy`` values: addresses or CIDR blocks."""
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as e:
            raise ConfigError(f"--trusted-proxy {value!r} is not an IP address or CIDR") from e
    return tuple(out)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    v = value.strip()
    if v.startswith("[") and "]" in v:  # [v6]:port
        v = v[1 : v.index("]")]
    elif v.count(":") == 1:  # v4:port
        v = v.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(v)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class HttpPerimeter:
    """ASGI middleware in front of the whole HTTP application.

    - From a peer in ``trusted`` only: the client address becomes the rightmost address in
      ``X-Forwarded-For`` that is not a trusted proxy (all trusted: the leftmost), and the
      scheme the last ``X-Forwarded-Proto`` value (``http`` or ``https``).  Everyone else's
      forwarded headers change nothing.
    - Every https response gets ``Strict-Transport-Security``; every response without its own
      ``Content-Security-Policy`` gets the dashboard's, and ``X-Content-Type-Options: nosniff``.
    """

    def __init__(self, app: ASGIApp, trusted: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def is_trusted(self, host: str | None) -> bool:
        addr = _address(host) if host else None
        return addr is not None and any(addr in n for n in self.trusted)

    def forwarded(self, scope: Scope) -> Scope:
        client = scope.get("client")
        if not self.trusted or not client or not self.is_trusted(client[0]):
            return scope
        xff: list[str] = []
        proto: list[str] = []
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                xff += [h for h in value.decode("latin-1").split(",") if h.strip()]
            elif name == b"x-forwarded-proto":
                proto += [p.strip().lower() for p in value.decode("latin-1").split(",")]
        scope = dict(scope)
        if xff:
            hops = [_address(h) for h in xff]
            chosen = next((a for a in reversed(hops) if not self._trusted_addr(a)), hops[0])
            if chosen is not None:
                scope["client"] = (str(chosen), 0)
        if proto and proto[-1] in ("http", "https"):
            https = proto[-1] == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if https else "ws"
            else:
                scope["scheme"] = "https" if https else "http"
        return scope

    def _trusted_addr(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return addr is not None and any(addr in n for n in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = self.forwarded(scope)
        https = scope.get("scheme") in ("https", "wss")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if https and b"strict-transport-security" not in names:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", DEFAULT_CSP.encode()))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
