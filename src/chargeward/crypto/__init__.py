"""Cryptography for Chargeward: the only package that imports ``cryptography.hazmat``.

Keys are addressed by URI (``file:/path/key.pem``, or ``pkcs11:token=...;object=...`` for a
key inside an HSM token) and used through the :class:`~chargeward.crypto.keys.Signer`
protocol, so nothing outside this package cares where a private key lives.  Ed25519 keys
for signed notes (audit-log checkpoints) live in :mod:`~chargeward.crypto.ed25519`.
:func:`key_attributes` shows that a token key cannot be extracted.
"""

from chargeward.crypto.ed25519 import (
    Ed25519Signer,
    MessageSigner,
    generate_ed25519_key,
    load_ed25519_signer,
    verify_ed25519,
)
from chargeward.crypto.keys import (
    Signer,
    generate_key,
    load_signer,
    passphrase_from_env,
    public_key_fingerprint,
    public_key_pem,
)
from chargeward.crypto.pkcs11 import KeyProtection, Pkcs11Signer, key_attributes
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
    "Ed25519Signer",
    "KeyProtection",
    "MessageSigner",
    "Pkcs11Signer",
    "Signer",
    "certificate_fingerprint",
    "certificate_pem",
    "check_signing_certificate",
    "create_root_ca",
    "describe_certificate",
    "generate_ed25519_key",
    "generate_key",
    "issue_firmware_signing_certificate",
    "key_attributes",
    "key_matches_certificate",
    "load_certificate",
    "load_certificate_file",
    "load_certificates",
    "load_certificates_file",
    "load_ed25519_signer",
    "load_signer",
    "passphrase_from_env",
    "public_key_fingerprint",
    "public_key_pem",
    "sha256_bytes",
    "sha256_file",
    "sign_firmware_digest",
    "verify_ed25519",
    "verify_firmware_signature",
    "verify_firmware_signing_certificate",
]
