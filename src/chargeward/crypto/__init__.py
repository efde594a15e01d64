"""Cryptography for Chargeward: the only package that imports ``cryptography.hazmat``.

Keys are addressed by URI (``file:/path/key.pem`` today, ``pkcs11:...`` for HSM tokens) and
used through the :class:`~chargeward.crypto.keys.Signer` protocol, so nothing outside this
package cares where a private key lives.
"""

from chargeward.crypto.keys import Signer, generate_key, load_signer, passphrase_from_env
from chargeward.crypto.pki import (
    certificate_fingerprint,
    certificate_pem,
    create_root_ca,
    issue_firmware_signing_certificate,
    load_certificate,
    load_certificates,
    verify_firmware_signing_certificate,
)
from chargeward.crypto.signature import (
    Digest,
    sha256_file,
    sign_firmware_digest,
    verify_firmware_signature,
)

__all__ = [
    "Digest",
    "Signer",
    "certificate_fingerprint",
    "certificate_pem",
    "create_root_ca",
    "generate_key",
    "issue_firmware_signing_certificate",
    "load_certificate",
    "load_certificates",
    "load_signer",
    "passphrase_from_env",
    "sha256_file",
    "sign_firmware_digest",
    "verify_firmware_signature",
    "verify_firmware_signing_certificate",
]
