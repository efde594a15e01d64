"""A charger vendor's own PKI and signed firmware, made with ``cryptography`` the way a vendor's
build would (generated per test run; nothing secret is committed): a manufacturer root, a
firmware-signing certificate issued directly by it, and the OCPP 2.0.1 signature of an image
(ECDSA or RSA over its SHA-256, base64).  Also the check a real charger makes
(:func:`charger_accepts`), written here against the spec, not with Chargeward's verifier.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _key(use_rsa: bool) -> PrivateKey:
    if use_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cn.split()[0]),
        ]
    )


def _usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class VendorPki:
    root: x509.Certificate
    root_key: PrivateKey
    signing: x509.Certificate
    signing_key: PrivateKey

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def signing_pem(self) -> str:
        return self.signing.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def create(
        cls,
        name: str,
        *,
        use_rsa: bool = False,
        now: dt.datetime | None = None,
        signing_days: int = 365,
    ) -> VendorPki:
        now = now or dt.datetime.now(dt.UTC)
        root_key = _key(use_rsa)
        root_name = _name(f"{name} Manufacturer Root")
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(sign=True, ca=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )
        signing_key = _key(use_rsa)
        start = now - dt.timedelta(days=10)
        signing = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} Firmware Signing"))
            .issuer_name(root_name)
            .public_key(signing_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=signing_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign=True, ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(signing_key.public_key()), False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
            )
            .sign(root_key, hashes.SHA256())
        )
        return cls(root, root_key, signing, signing_key)

    def sign(self, image: bytes) -> str:
        """The OCPP 2.0.1 firmware signature of ``image``: over its SHA-256, base64."""
        digest = hashlib.sha256(image).digest()
        prehashed = utils.Prehashed(hashes.SHA256())
        key = self.signing_key
        if isinstance(key, rsa.RSAPrivateKey):
            raw = key.sign(digest, padding.PKCS1v15(), prehashed)
        else:
            raw = key.sign(digest, ec.ECDSA(prehashed))
        return base64.b64encode(raw).decode()


def charger_accepts(
    image: bytes, signature: str, certificate_pem: str, root: x509.Certificate, now: dt.datetime
) -> bool:
    """What a third-party charger checks (OCPP 2.0.1 L01.FR.03/L01.FR.04): the signing
    certificate issued by its installed root and valid now, the signature over SHA-256."""
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    try:
        cert.verify_directly_issued_by(root)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return False
        key = cert.public_key()
        digest = hashlib.sha256(image).digest()
        raw = base64.b64decode(signature, validate=True)
        prehashed = utils.Prehashed(hashes.SHA256())
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, digest, padding.PKCS1v15(), prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, digest, ec.ECDSA(prehashed))
        else:
            return False
    except Exception:  # any failure is a refusal, as on a charger
        return False
    return True
