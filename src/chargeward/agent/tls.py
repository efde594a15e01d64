"""The charger's side of OCPP security profiles 2 and 3, and its station certificate (A02).

::

    secure/csms-roots.pem        CSMSRootCertificate(s): the trust anchors for wss://
    secure/device.pem            station certificate chain (leaf first, CN = serial number)
    secure/credentials.enc       its private key (``device_key_pem``), sealed; during a
                                 renewal also the key of the outstanding CSR
                                 (``pending_device_key_pem``)

A renewal installs the new certificate first and then makes the pending key current; a
power loss between the two leaves a certificate that matches the pending key, and
:func:`client_identity` finishes the switch.  The TLS client is as strict as the CSMS
(:func:`~chargeward.crypto.tls.restrict_to_ocpp_tls`: TLS >= 1.2, the OCPP cipher suites, no
compression or renegotiation), checks the CSMS certificate against ``csms-roots.pem`` with
hostname verification and presents the station certificate when the charger has one::

    ctx = client_context(StateDir(Path("charger-1")))
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from dataclasses import replace

from chargeward.agent.state import StateDir
from chargeward.agent.storage import atomic_write
from chargeward.crypto.pki import (
    certificate_common_name,
    certificate_pem,
    key_matches_certificate,
    load_certificate,
    load_certificates,
)
from chargeward.crypto.sealing import device_public_key, generate_device_key_pair
from chargeward.crypto.tls import (
    build_csr,
    encrypted_key_pem,
    issuers_of,
    load_chain,
    organization_of,
    restrict_to_ocpp_tls,
    verify_signed_chain,
)
from chargeward.errors import ConfigError, UntrustedCertificate
from chargeward.ocpp.station import CertificateResult

STATION_CERTIFICATE = "ChargingStationCertificate"


def client_identity(state: StateDir) -> tuple[str, str] | None:
    """(certificate chain PEM, private key PEM) of the station certificate, or None."""
    path = state.device_certificate_path
    if not path.exists():
        return None
    chain = path.read_text()
    cert = load_certificate(chain)
    store = state.credential_store()
    creds = store.load()
    for key in (creds.device_key_pem, creds.pending_device_key_pem):
        if key is not None and key_matches_certificate(device_public_key(key), cert):
            if key != creds.device_key_pem:  # a renewal interrupted after the certificate
                store.save(replace(creds, device_key_pem=key, pending_device_key_pem=None))
            return chain, key
    return None


def client_context(state: StateDir) -> ssl.SSLContext:
    """The TLS context for wss:// to the CSMS (OCPP 2.0.1 part 2, A00).

    TLS 1.2 or 1.3; for TLS 1.2 only the OCPP cipher suites; no compression, no
    renegotiation.  The CSMS certificate must chain to ``secure/csms-roots.pem`` (the only
    trust anchors: no system CAs), be valid now and name the host of the URL.  With a
    station certificate (profile 3) the context presents it.
    """
    roots = state.csms_roots_path
    if not roots.exists():
        raise ConfigError(
            f"wss:// needs the CSMS root certificate(s) in {roots} "
            "(provision them with 'chargeward agent init --csms-root' or InstallCertificate)"
        )
    ctx = restrict_to_ocpp_tls(ssl.create_default_context(cafile=str(roots)))
    ctx.verify_mode = ssl.CERT_REQUIRED  # the defaults of a client context, stated
    ctx.check_hostname = True
    identity = client_identity(state)
    if identity is not None:
        pem, password = encrypted_key_pem(identity[1])
        fd, name = tempfile.mkstemp(prefix=".tls-key-", dir=state.secure)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            ctx.load_cert_chain(state.device_certificate_path, name, password=password)
        finally:
            os.unlink(name)
    return ctx


# -- renewal (OCPP A02) ----------------------------------------------------------------------


def new_csr(state: StateDir) -> str:
    """Make a new key (sealed as pending) and return its CSR (CN = serial number)."""
    identity = state.identity()
    organization = identity.vendor
    if state.device_certificate_path.exists():
        organization = (
            organization_of(load_certificate(state.device_certificate_path.read_bytes()))
            or organization
        )
    pair = generate_device_key_pair()
    store = state.credential_store()
    store.save(replace(store.load(), pending_device_key_pem=pair.private_pem))
    return build_csr(pair.private_pem, identity.serial_number, organization)


def install_signed_certificate(
    state: StateDir, chain_pem: str, certificate_type: str | None, now: dt.datetime
) -> CertificateResult:
    """Check and install a CertificateSigned chain; the answer for the CSMS."""
    if certificate_type not in (None, STATION_CERTIFICATE):
        return CertificateResult("Rejected", "NotSupported", f"{certificate_type} is not used")
    store = state.credential_store()
    creds = store.load()
    pending = creds.pending_device_key_pem
    if pending is None:
        return CertificateResult("Rejected", "NoRequest", "no certificate request is outstanding")
    try:
        chain = load_chain(chain_pem)
        anchors = (
            load_certificates(state.csms_roots_path.read_bytes())
            if state.csms_roots_path.exists()
            else []
        )
        if state.device_certificate_path.exists():
            # The CA that issued the current certificate may issue its successor.
            current = load_certificate(state.device_certificate_path.read_bytes())
            anchors += issuers_of(current, chain[1:])
        leaf = verify_signed_chain(
            chain_pem, anchors, pending, state.identity().serial_number, now=now
        )
    except UntrustedCertificate as e:
        return CertificateResult("Rejected", "InvalidCertificate", str(e))
    atomic_write(state.device_certificate_path, "".join(certificate_pem(c) for c in chain).encode())
    store.save(replace(creds, device_key_pem=pending, pending_device_key_pem=None))
    return CertificateResult(
        "Accepted",
        security_event=f"station certificate renewed: serial {leaf.serial_number:x}, "
        f"CN {certificate_common_name(leaf)}, valid until {leaf.not_valid_after_utc:%Y-%m-%d}",
    )
