"""DSSE envelopes (Dead Simple Signing Envelope v1) signed with a Chargeward :class:`Signer`.

An envelope carries a payload, its type and signatures over the pre-authentication encoding
(DSSE protocol, "Signature definition")::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

Signatures are ECDSA P-256 over SHA-256(PAE), DER encoded (what every ``Signer`` makes, from a
key file or a PKCS#11 token); ``keyid`` is :func:`~chargeward.crypto.keys.public_key_fingerprint`
of the signing key.  The keyid is a hint only: verification tries every trusted key, so a
signature with a missing or unknown keyid still verifies under the right key, and a keyid that
names a trusted key does not make a signature trusted.

    envelope = sign_envelope("application/vnd.in-toto+json", payload, signer)
    data = envelope.to_json()
    verified = verify_envelope(parse_envelope(data), [signer.public_key()])
    verified.payload == payload
    # -> True

Format choices: envelopes are written with standard base64 and read with standard or URL-safe
base64, padded or not (DSSE envelope spec).  securesystemslib's ``dsse.Envelope`` implements the
same format, but its verifier only considers signatures whose keyid equals the key's TUF keyid
and it has no input limits, so the envelope is read and checked here; the tests check both
implementations against each other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from chargeward import strictjson
from chargeward.crypto.keys import Signer, public_key_fingerprint
from chargeward.errors import AttestationRefused, ConfigError
from chargeward.limits import DEFAULT_FORMAT_LIMITS

PublicKey = ec.EllipticCurvePublicKey  # what verifies an envelope: an ECDSA P-256 public key


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding; lengths are byte counts in ASCII decimal."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _sign_input(payload_type: str, payload: bytes) -> bytes:
    return hashlib.sha256(pae(payload_type, payload)).digest()


@dataclass(frozen=True)
class EnvelopeSignature:
    """One signature of an envelope: the DER bytes and the keyid hint (may be empty)."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope as read or made; nothing in it is trusted until :func:`verify_envelope`."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``payload``, ``payloadType``, ``signatures[{keyid, sig}]``."""
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    def to_json(self) -> bytes:
        """The envelope as UTF-8 JSON (sorted keys, two-space indent, final newline)."""
        text = json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False)
        return (text + "\n").encode("utf-8")


@dataclass(frozen=True)
class VerifiedEnvelope:
    """A payload whose signature verified; only :func:`verify_envelope` makes one."""

    payload_type: str
    payload: bytes
    keyid: str  # fingerprint of the trusted key that verified it


def sign_envelope(payload_type: str, payload: bytes, signer: Signer) -> Envelope:
    """Sign ``payload`` of ``payload_type`` with ``signer`` (ECDSA P-256, SHA-256 of the PAE)."""
    der = signer.sign_digest(_sign_input(payload_type, payload))
    keyid = public_key_fingerprint(signer.public_key())
    return Envelope(payload_type, payload, (EnvelopeSignature(keyid, der),))


def _malformed(message: str) -> NoReturn:
    raise AttestationRefused("malformed", message)


def load_strict_json(raw: bytes) -> Any:
    """Parse UTF-8 JSON refusing repeated keys, NaN/Infinity and deep nesting
    (:func:`chargeward.strictjson.loads`); raises :class:`ValueError` with a short reason."""
    return strictjson.loads(raw)


def _b64(value: object, field: str, limit: int) -> bytes:
    """Standard or URL-safe base64, padded or not (DSSE envelope spec)."""
    if not isinstance(value, str):
        _malformed(f"envelope field {field} must be a string")
    if len(value) > limit:
        raise AttestationRefused("oversized", f"envelope field {field} is too long")
    text = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise AttestationRefused("malformed", f"envelope field {field} is not base64") from e


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        _malformed(f"envelope field {field} must be a string")
    if len(value) > limit:
        raise AttestationRefused("oversized", f"envelope field {field} is too long")
    return value


def _signature(value: object, index: int) -> EnvelopeSignature:
    where = f"signatures[{index}]"
    if not isinstance(value, dict) or "sig" not in value:
        _malformed(f"envelope {where} must be an object with a sig")
    unknown = sorted(value.keys() - {"keyid", "sig"})
    if unknown:
        _malformed(f"envelope {where} has unknown keys {', '.join(map(repr, unknown))}")
    keyid = _text(value.get("keyid", ""), f"{where}.keyid", DEFAULT_FORMAT_LIMITS.dsse_keyid_chars)
    return EnvelopeSignature(
        keyid, _b64(value["sig"], f"{where}.sig", DEFAULT_FORMAT_LIMITS.dsse_signature_chars)
    )


def parse_envelope(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_FORMAT_LIMITS.dsse_envelope_bytes,
    max_signatures: int = DEFAULT_FORMAT_LIMITS.dsse_signatures,
) -> Envelope:
    """Read an envelope from untrusted bytes; checks its shape and sizes, not its signatures.

    Raises :class:`AttestationRefused` (``oversized`` or ``malformed``).
    """
    if len(data) > max_bytes:
        raise AttestationRefused(
            "oversized", f"envelope is {len(data)} bytes, more than the {max_bytes} allowed"
        )
    try:
        doc = load_strict_json(data)
    except ValueError as e:
        raise AttestationRefused("malformed", f"envelope is {e}") from e
    if not isinstance(doc, dict):
        _malformed("envelope must be a JSON object")
    missing = sorted({"payload", "payloadType", "signatures"} - doc.keys())
    if missing:
        _malformed(f"envelope lacks {', '.join(map(repr, missing))}")
    signatures = doc["signatures"]
    if not isinstance(signatures, list) or not signatures:
        _malformed("envelope signatures must be a non-empty list")
    if len(signatures) > max_signatures:
        raise AttestationRefused(
            "oversized", f"envelope has {len(signatures)} signatures, at most {max_signatures}"
        )
    return Envelope(
        payload_type=_text(
            doc["payloadType"], "payloadType", DEFAULT_FORMAT_LIMITS.dsse_payload_type_chars
        ),
        payload=_b64(doc["payload"], "payload", max_bytes),
        signatures=tuple(_signature(s, i) for i, s in enumerate(signatures)),
    )


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, digest: bytes) -> bool:
    try:
        key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_envelope(envelope: Envelope, trusted_keys: Sequence[PublicKey]) -> VerifiedEnvelope:
    """Accept ``envelope`` if any signature verifies under any trusted key (keyids ignored).

    Raises :class:`AttestationRefused` (``signature``) otherwise.  The payload type is
    authenticated by the signature; checking that it is the expected one is the caller's.
    """
    if not trusted_keys:
        raise ConfigError("no trusted public key to verify the envelope with")
    digest = _sign_input(envelope.payload_type, envelope.payload)
    for signature in envelope.signatures:
        for key in trusted_keys:
            if _verifies(key, signature.sig, digest):
                return VerifiedEnvelope(
                    envelope.payload_type, envelope.payload, public_key_fingerprint(key)
                )
    raise AttestationRefused("signature", "no envelope signature verifies under a trusted key")


def load_public_key(pem: bytes, source: str = "public key") -> ec.EllipticCurvePublicKey:
    """Read a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) holding an ECDSA P-256 key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"{source} is not a PEM public key") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{source} is not an ECDSA P-256 public key")
    return key
