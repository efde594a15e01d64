"""Cryptography for Chargeward: the only package that imports ``cryptography.hazmat``.

Keys are addressed by URI (``file:/path/key.pem`` today, ``pkcs11:...`` for HSM tokens) and
used through the :class:`~chargeward.crypto.keys.Signer` protocol, so nothing outside this
package cares where a private key lives.
"""

from chargeward.crypto.keys import (
    Signer,
    generate_key,
    load_signer,
    passphrase_from_env,
    public_key_fingerprint,
    public_key_pem,
)
from chargeward.crypto.pki import (
    CertificateInfo,
    certificate_fingerprint,
    certificate_pem,
    check_signing_certificate,
    create_root_ca,
    describe_certificate,
    issue_firmware_signing_certificate,
    key_matches_certificate,
    load_certificate,
    load_certificate_file,
    load_certificates,
    load_certificates_file,
    verify_firmware_signing_certificate,
)
from chargeward.crypto.signature import (
    Digest,
    sha256_bytes,
    sha256_file,
    sign_firmware_digest,
    verify_firmware_signature,
)

__all__ = [
    "CertificateInfo",
    "Digest",
    "Signer",
    "certificate_fingerprint",
    "certificate_pem",
    "check_signing_certificate",
    "create_root_ca",
    "describe_certificate",
    "generate_key",
    "issue_firmware_signing_certificate",
    "key_matches_certificate",
    "load_certificate",
    "load_certificate_file",
    "load_certificates",
    "load_certificates_file",
    "load_signer",
    "passphrase_from_env",
    "public_key_fingerprint",
    "public_key_pem",
    "sha256_bytes",
    "sha256_file",
    "sign_firmware_digest",
    "verify_firmware_signature",
    "verify_firmware_signing_certificate",
]
