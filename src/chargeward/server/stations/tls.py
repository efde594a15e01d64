"""The CSMS's TLS context for OCPP security profiles 2 and 3.

TLS 1.2 or 1.3 only; for TLS 1.2 exactly the cipher suites OCPP 2.0.1 names for the CSMS (A00
"Security profiles"); no compression, no renegotiation: the policy of both ends,
:func:`chargeward.crypto.tls.restrict_to_ocpp_tls`.  With a charger CA the context asks for a
client certificate (``CERT_OPTIONAL``): a profile-2 station without one still connects and
proves itself with HTTP Basic, a presented certificate must chain to the charger CA.
Validity in time, CN = station identity, the leaf's extensions, and whether it is the
station's registered certificate and not revoked are checked per connection against the URL
(which the handshake cannot see) and the database by :mod:`chargeward.server.stations.csms`, with
the server's clock: a revocation takes effect at the next login on every node without reloading
this context (ADR 0022)::

    ctx = server_context(TlsFiles(Path("csms.pem"), "file:csms.key", Path("ca.pem")),
                         passphrase)
"""

from __future__ import annotations

import asyncio.sslproto
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chargeward.crypto.keys import PassphraseSource, load_signer, ssl_key_file
from chargeward.crypto.pki import load_certificates_file
from chargeward.crypto.tls import OCPP_TLS12_CIPHERS as OCPP_TLS12_CIPHERS  # re-exported
from chargeward.crypto.tls import check_tls_key_uri, restrict_to_ocpp_tls
from chargeward.errors import ConfigError
from chargeward.server.stations.station_security import ChargerCa

LOG = logging.getLogger("chargeward.server")

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the handshake checks the chain, the server checks
# validity in time with its own (injectable) clock and says why it refused.
_NO_CHECK_TIME = 0x200000


# asyncio gives every TLS connection a 256 KiB read buffer (``SSLProtocol.max_size``), filled
# with zeros when the connection opens, so each idle wss:// station would cost ~260 KiB
# (python/cpython#109534).  A socket read needs room for one TLS record (16 KiB of data plus
# its overhead); a bigger read only takes more turns of the loop.
TLS_READ_BUFFER = 4 * 1024


def limit_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Make asyncio's per-connection TLS read buffer ``size`` bytes (process-wide)."""
    asyncio.sslproto.SSLProtocol.max_size = size


# A TLS client that connects and never finishes its handshake is held by asyncio for 60 s
# (``asyncio.constants.SSL_HANDSHAKE_TIMEOUT``; neither uvicorn nor websockets pass their own),
# before any HTTP head or OCPP timeout can start: 150 such connections tie up the listener.
TLS_HANDSHAKE_TIMEOUT = 10.0


def limit_tls_handshake(seconds: float = TLS_HANDSHAKE_TIMEOUT) -> None:
    """Close a TLS connection whose handshake is not done within ``seconds`` (process-wide:
    both listeners)."""
    asyncio.constants.SSL_HANDSHAKE_TIMEOUT = seconds


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path  # server certificate chain, PEM, leaf first
    key: str  # file:... URI of its encrypted PKCS#8 key
    charger_ca: Path | None = None  # CA of station certificates (profile 3)


def load_certificate_and_key(
    ctx: ssl.SSLContext, certificate: Path, key: str, passphrase: PassphraseSource
) -> None:
    """``ctx.load_cert_chain`` for a Chargeward key file (``file:`` URI, any format it reads)."""
    key_file = check_tls_key_uri(key)
    pem, password = ssl_key_file(key, passphrase)  # ssl reads only PBKDF2 PKCS#8 files
    fd, tmp = tempfile.mkstemp(prefix=".tls-key-")  # mode 0600; removed once loaded
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        ctx.load_cert_chain(certificate, tmp, password=password)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"cannot load the TLS certificate {certificate} with key {key_file}: "
            f"{getattr(e, 'strerror', None) or e} (not a matching pair?)"
        ) from e
    finally:
        os.unlink(tmp)


def server_context(files: TlsFiles, passphrase: PassphraseSource) -> ssl.SSLContext:
    limit_tls_read_buffer()  # the listener holds thousands of these connections
    ctx = restrict_to_ocpp_tls(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    load_certificate_and_key(ctx, files.certificate, files.key, passphrase)
    if files.charger_ca is not None:
        try:
            ctx.load_verify_locations(cafile=files.charger_ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the charger CA {files.charger_ca}: {e}") from e
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


@dataclass(frozen=True)
class OcppSecurity:
    """The server's OCPP security settings (``chargeward server`` options)."""

    tls_certificate: Path | None = None
    tls_key: str | None = None
    charger_ca: Path | None = None  # CA certificate(s) of station certificates
    charger_ca_key: str | None = None  # its key (file: or pkcs11:), to sign renewals (A02)
    allow_profile_1: bool = False  # plain ws for profile-1 stations: a lab only
    certificate_days: int = 365  # validity of renewed station certificates
    renew_within_days: int = 30  # renew profile-3 certificates expiring this soon
    renew_check_interval: float = 3600.0


def listener_security(
    settings: OcppSecurity, passphrase: PassphraseSource
) -> tuple[ssl.SSLContext | None, ChargerCa | None]:
    """The listener's TLS context and charger CA; refuses a server without TLS unless the
    operator enabled profile 1 for a lab."""
    charger_ca = None
    if settings.charger_ca is not None:
        certs = tuple(load_certificates_file(settings.charger_ca))
        signer = (
            load_signer(settings.charger_ca_key, passphrase) if settings.charger_ca_key else None
        )
        charger_ca = ChargerCa(certs, signer, settings.certificate_days)
        if signer is not None and charger_ca.issuer is None:
            raise ConfigError(
                f"charger CA key {signer.uri} matches no certificate in {settings.charger_ca}"
            )
    if settings.tls_certificate is None or settings.tls_key is None:
        if settings.tls_certificate is not None or settings.tls_key is not None:
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if not settings.allow_profile_1:
            raise ConfigError(
                "no TLS configured: give --tls-cert and --tls-key (security profiles 2 and 3), "
                "or --allow-insecure-profile-1 for a lab network"
            )
        LOG.warning(
            "SECURITY PROFILE 1: OCPP runs WITHOUT TLS; station passwords cross the network in "
            "clear text. Use this only on an isolated lab network."
        )
        return None, charger_ca
    files = TlsFiles(settings.tls_certificate, settings.tls_key, settings.charger_ca)
    return server_context(files, passphrase), charger_ca
