"""ECDSA P-256 and Ed25519 keys held in a PKCS#11 token (an HSM, or SoftHSM2 in tests and demos).

P-256 keys sign firmware, TUF metadata and certificates (:class:`Pkcs11Signer`); Ed25519 keys
sign the audit log's checkpoints (:class:`Pkcs11Ed25519Signer`, ``CKM_EDDSA``, PKCS#11 v3.0).

A key is named by an RFC 7512 URI, of which this module understands a strict subset::

    pkcs11:token=<token label>;object=<key label>[?module-path=/abs/path/module.so]

Values are percent-decoded (RFC 7512 section 2.3) and read as UTF-8.  Other attributes,
and above all ``pin-value``/``pin-source``, are refused: a PIN never travels in a URI.

* Module: the URI's ``module-path``, else ``$CHARGEWARD_PKCS11_MODULE``, else SoftHSM2's
  ``/usr/lib/softhsm/libsofthsm2.so``.
* User PIN: ``$CHARGEWARD_PKCS11_PIN``, else the ``pin_source`` callable (the CLI prompts).
* Tokens are found by label, never by slot number (SoftHSM2 assigns random slot ids).

    signer = load_pkcs11_signer("pkcs11:token=factory;object=signing", pin)
    der = signer.sign_digest(hashlib.sha256(b"firmware").digest())
    key_attributes("pkcs11:token=factory;object=signing", pin).non_extractable
    # -> True

Every operation initialises the module, opens a session, logs in, works and then logs out,
closes the session and finalises the module, all under one process-wide lock.  So:

* each operation reads the module's configuration afresh (SoftHSM2 reads ``SOFTHSM2_CONF`` in
  ``C_Initialize``), which lets every test use its own token directory in one process;
* python-pkcs11 calls ``C_Initialize(NULL)``, which tells the module that the application
  will not call it from several threads at once (PKCS#11 v2.40 base section 5.4): the lock
  keeps that promise, so signers may be used from any thread (e.g. ``asyncio.to_thread``);
* no login outlives an operation.  The price is one ``C_Initialize`` per signature (about a
  millisecond with SoftHSM2).  Nothing else in the process may use the same module at the
  same time (another wrapper that initialises it makes our ``C_Initialize`` fail).

python-pkcs11 is imported on first use, so processes without HSM keys never load it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chargeward.errors import InvalidValue, KeyAccessError

if TYPE_CHECKING:
    from pkcs11 import PrivateKey, PublicKey, Session, Token
    from pkcs11._pkcs11 import lib as Pkcs11Library

PIN_ENV = "CHARGEWARD_PKCS11_PIN"
MODULE_ENV = "CHARGEWARD_PKCS11_MODULE"
DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

PinSource = Callable[[], bytes]

SCHEME = "pkcs11:"
# ecParameters namedCurve prime256v1 (RFC 5480 section 2.1.1.1), DER: the CKA_EC_PARAMS value.
P256_EC_PARAMS = bytes.fromhex("06082a8648ce3d030107")
_P256_BYTES = 32
# id-Ed25519 (RFC 8410 section 3), DER: the CKA_EC_PARAMS of a CKK_EC_EDWARDS key (PKCS#11 v3.0
# Current Mechanisms section 2.3.5 also allows the curve name "edwards25519").
ED25519_EC_PARAMS = bytes.fromhex("06032b6570")
ED25519_EC_PARAMS_NAMES = (ED25519_EC_PARAMS, bytes.fromhex("130c") + b"edwards25519")
_ED25519_BYTES = 32
# CK_TOKEN_INFO.label is CK_UTF8CHAR[32] (PKCS#11 v2.40 base section 3.2).
MAX_TOKEN_LABEL_BYTES = 32
MAX_LISTED_LABELS = 20

# RFC 7512 section 2.3: pk11-res-avail, and what path and query values may hold unencoded.
_UNRESERVED = "A-Za-z0-9\\-._~"
_RES_AVAIL = ":\\[\\]@!$'()*+,="
_PATH_VALUE = re.compile(f"(?:[{_UNRESERVED}{_RES_AVAIL}&]|%[0-9A-Fa-f]{{2}})*")
_QUERY_VALUE = re.compile(f"(?:[{_UNRESERVED}{_RES_AVAIL}/?|]|%[0-9A-Fa-f]{{2}})*")
_PATH_SAFE = frozenset("-._~:[]@!$'()*+,=&")
_QUERY_SAFE = frozenset("-._~:[]@!$'()*+,=/?|")

_PATH_ATTRIBUTES = ("token", "object")
_QUERY_ATTRIBUTES = ("module-path",)
_PIN_ATTRIBUTES = ("pin-value", "pin-source")

_LOCK = threading.Lock()


def is_pkcs11_uri(uri: str) -> bool:
    """True for ``pkcs11:`` URIs (the scheme is case-insensitive, RFC 3986 section 3.1)."""
    return uri[: len(SCHEME)].lower() == SCHEME


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parsed subset of an RFC 7512 URI; ``str()`` gives the canonical form.

    >>> str(parse_pkcs11_uri("PKCS11:object=ACME%20root;token=hsm-1"))
    'pkcs11:token=hsm-1;object=ACME%20root'
    """

    token: str
    object: str
    module_path: str | None = None

    def __str__(self) -> str:
        token, key = _encode(self.token, _PATH_SAFE), _encode(self.object, _PATH_SAFE)
        text = f"{SCHEME}token={token};object={key}"
        if self.module_path is not None:
            text += f"?module-path={_encode(self.module_path, _QUERY_SAFE)}"
        return text


def _encode(value: str, safe: frozenset[str]) -> str:
    return "".join(
        ch
        if (ch.isascii() and ch.isalnum()) or ch in safe
        else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in value
    )


def _decode(value: str, name: str) -> str:
    octets = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "%":
            octets.append(int(value[i + 1 : i + 3], 16))  # syntax checked by the caller
            i += 3
        else:
            octets += value[i].encode("ascii")
            i += 1
    try:
        text = octets.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KeyAccessError(f"PKCS#11 URI attribute {name!r} is not UTF-8") from e
    if not text:
        raise KeyAccessError(f"PKCS#11 URI attribute {name!r} is empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise KeyAccessError(f"PKCS#11 URI attribute {name!r} holds control characters")
    return text


def _attributes(
    component: str, separator: str, allowed: tuple[str, ...], syntax: re.Pattern[str]
) -> dict[str, str]:
    """Split one URI component into decoded attributes, refusing anything not ``allowed``."""
    found: dict[str, str] = {}
    if not component:
        return found
    for item in component.split(separator):
        name, equals, raw = item.partition("=")
        if not equals or not name:
            raise KeyAccessError(f"malformed PKCS#11 URI: {item[:40]!r} is not name=value")
        if name in _PIN_ATTRIBUTES:
            raise KeyAccessError(
                f"PKCS#11 URIs carrying a PIN ({name}) are refused: set {PIN_ENV} instead"
            )
        if name not in allowed:
            raise KeyAccessError(
                f"unsupported attribute {name[:40]!r} in PKCS#11 URI: use "
                "pkcs11:token=LABEL;object=LABEL[?module-path=/path/module.so]"
            )
        if name in found:  # RFC 7512 section 2.3: an attribute appears at most once
            raise KeyAccessError(f"attribute {name!r} appears twice in PKCS#11 URI")
        if not syntax.fullmatch(raw):
            raise KeyAccessError(
                f"PKCS#11 URI attribute {name!r} holds characters that must be percent-encoded"
            )
        found[name] = _decode(raw, name)
    return found


def parse_pkcs11_uri(uri: str) -> Pkcs11Uri:
    """Parse ``pkcs11:token=...;object=...[?module-path=...]`` strictly (RFC 7512 subset).

    Error messages name attributes but never repeat the URI, which might hold a PIN.
    """
    if not is_pkcs11_uri(uri):
        raise KeyAccessError("not a PKCS#11 URI (expected pkcs11:token=...;object=...)")
    rest = uri[len(SCHEME) :]
    if "#" in rest:
        raise KeyAccessError("PKCS#11 URIs have no fragment ('#' must be percent-encoded)")
    path, _, query = rest.partition("?")
    attributes = _attributes(path, ";", _PATH_ATTRIBUTES, _PATH_VALUE)
    options = _attributes(query, "&", _QUERY_ATTRIBUTES, _QUERY_VALUE)
    missing = [name for name in _PATH_ATTRIBUTES if name not in attributes]
    if missing:
        raise KeyAccessError(
            f"PKCS#11 URI lacks {' and '.join(missing)}: "
            "use pkcs11:token=LABEL;object=LABEL[?module-path=/path/module.so]"
        )
    token = attributes["token"]
    if len(token.encode("utf-8")) > MAX_TOKEN_LABEL_BYTES:
        raise KeyAccessError(f"PKCS#11 token labels have at most {MAX_TOKEN_LABEL_BYTES} bytes")
    module = options.get("module-path")
    if module is not None and not os.path.isabs(module):
        raise KeyAccessError("PKCS#11 URI module-path must be an absolute path")
    return Pkcs11Uri(token, attributes["object"], module)


def normalise_pkcs11_uri(uri: str) -> str:
    """The canonical spelling of a PKCS#11 key URI (raises on a malformed one)."""
    return str(parse_pkcs11_uri(uri))


@dataclass(frozen=True)
class _Location:
    uri: Pkcs11Uri
    module: str


def _locate(uri: str) -> _Location:
    parsed = parse_pkcs11_uri(uri)
    if parsed.module_path is not None:
        module, origin = parsed.module_path, "from the URI's module-path"
    elif os.environ.get(MODULE_ENV):
        module, origin = os.environ[MODULE_ENV], f"from ${MODULE_ENV}"
    else:
        module, origin = DEFAULT_MODULE, "the default; `make system-deps` installs SoftHSM2"
    if not os.path.isfile(module):
        raise KeyAccessError(f"PKCS#11 module {module} not found ({origin})")
    return _Location(parsed, module)


def _pin(source: PinSource, token: str) -> str:
    raw = os.environ.get(PIN_ENV, "").encode() or source()
    try:
        pin = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KeyAccessError(f"the PIN for token {token!r} is not UTF-8") from e
    if not pin:
        raise KeyAccessError(f"no PIN for token {token!r}: set {PIN_ENV}")
    return pin


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


def _token(lib: Pkcs11Library, location: _Location) -> Token:
    from pkcs11 import TokenFlag

    label = location.uri.token
    tokens = [t for t in lib.get_tokens() if t.flags & TokenFlag.TOKEN_INITIALIZED]
    matching = [t for t in tokens if t.label == label]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise KeyAccessError(f"{len(matching)} PKCS#11 tokens are labelled {label!r}")
    present = sorted(repr(t.label) for t in tokens)[:MAX_LISTED_LABELS]
    raise KeyAccessError(
        f"no PKCS#11 token labelled {label!r} in {location.module} "
        f"(tokens present: {', '.join(present) or 'none'})"
    )


def _login(token: Token, pin: str, *, rw: bool) -> Session:
    from pkcs11 import exceptions as p11

    label = token.label
    try:
        return token.open(rw=rw, user_pin=pin)
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange) as e:
        raise KeyAccessError(f"wrong PIN for token {label!r}") from e
    except p11.PinLocked as e:
        raise KeyAccessError(f"the user PIN of token {label!r} is locked") from e
    except p11.UserPinNotInitialized as e:
        raise KeyAccessError(f"token {label!r} has no user PIN set") from e


@contextlib.contextmanager
def _logged_in(
    location: _Location, pin_source: Callable[[str], str], *, rw: bool = False
) -> Iterator[tuple[Session, str]]:
    """One operation: initialise, find the token, log in; undo all of it afterwards.

    Yields the session and the PIN that opened it.  Any PKCS#11 error becomes a
    :class:`KeyAccessError`.
    """
    import pkcs11
    from pkcs11 import exceptions as p11

    with _LOCK:
        try:
            lib = pkcs11.lib(os.path.realpath(location.module))
        except p11.PKCS11Error as e:
            raise KeyAccessError(
                f"cannot initialise PKCS#11 module {location.module}: {_describe(e)}"
            ) from e
        try:
            token = _token(lib, location)
            pin = pin_source(token.label)
            session = _login(token, pin, rw=rw)
            try:
                yield session, pin
            finally:
                with contextlib.suppress(p11.PKCS11Error):
                    session.close()
        except p11.PKCS11Error as e:
            raise KeyAccessError(
                f"PKCS#11 error on token {location.uri.token!r}: {_describe(e)}"
            ) from e
        finally:
            with contextlib.suppress(p11.PKCS11Error):
                lib.finalize()


def _ask(source: PinSource) -> Callable[[str], str]:
    return lambda token: _pin(source, token)


def _known(pin: str) -> Callable[[str], str]:
    return lambda _token: pin


def _ambiguous(count: int, what: str, location: _Location) -> KeyAccessError:
    return KeyAccessError(
        f"{count} {what}s are labelled {location.uri.object!r} in token {location.uri.token!r}"
    )


def _private_key(session: Session, location: _Location, *, ed25519: bool = False) -> PrivateKey:
    from pkcs11 import Attribute, KeyType, ObjectClass, PrivateKey

    label = location.uri.object
    found = [
        key
        for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        if isinstance(key, PrivateKey)
    ]
    keys = [key for key in found if key.label == label]
    if len(keys) > 1:
        raise _ambiguous(len(keys), "private key", location)
    if not keys:
        present = sorted(repr(key.label) for key in found)[:MAX_LISTED_LABELS]
        raise KeyAccessError(
            f"no private key labelled {label!r} in token {location.uri.token!r} "
            f"(private keys present: {', '.join(present) or 'none'})"
        )
    key = keys[0]
    if ed25519:
        if key.key_type != KeyType.EC_EDWARDS or key[Attribute.EC_PARAMS] not in (
            ED25519_EC_PARAMS_NAMES
        ):
            raise KeyAccessError(f"key {label!r} in token {location.uri.token!r} is not Ed25519")
    elif key.key_type != KeyType.EC or key[Attribute.EC_PARAMS] != P256_EC_PARAMS:
        raise KeyAccessError(f"key {label!r} in token {location.uri.token!r} is not ECDSA P-256")
    return key


def _ec_point(value: bytes, label: str) -> ec.EllipticCurvePublicKey:
    """Decode CKA_EC_POINT: the DER OCTET STRING of the X9.62 point.

    PKCS#11 v2.40 Current Mechanisms section 2.3.3; some tokens store the bare point, so
    both spellings are accepted for P-256.
    """
    point_length = 1 + 2 * _P256_BYTES
    if len(value) == point_length + 2 and value[:2] == bytes([0x04, point_length]):
        value = value[2:]
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), value)
    except ValueError as e:
        raise KeyAccessError(f"public key {label!r} holds no valid P-256 point") from e


def _public_object(session: Session, location: _Location, private: PrivateKey) -> PublicKey:
    from pkcs11 import Attribute, ObjectClass, PublicKey

    label = location.uri.object
    keys = [
        key
        for key in session.get_objects(
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label}
        )
        if isinstance(key, PublicKey)
    ]
    if len(keys) > 1:  # prefer the one sharing the private key's CKA_ID
        keys = [key for key in keys if key.id == private.id] or keys
    if len(keys) > 1:
        raise _ambiguous(len(keys), "public key", location)
    if not keys:
        raise KeyAccessError(
            f"token {location.uri.token!r} holds no public key object labelled {label!r}"
        )
    return keys[0]


def _public_key(
    session: Session, location: _Location, private: PrivateKey
) -> ec.EllipticCurvePublicKey:
    from pkcs11 import Attribute

    key = _public_object(session, location, private)
    if key[Attribute.EC_PARAMS] != P256_EC_PARAMS:
        raise KeyAccessError(f"public key {location.uri.object!r} is not on P-256")
    return _ec_point(key[Attribute.EC_POINT], location.uri.object)


def _ed25519_point(value: bytes, label: str) -> bytes:
    """CKA_EC_POINT of an Edwards key: the DER OCTET STRING of the 32-byte RFC 8032 encoding
    (PKCS#11 v3.0 Current Mechanisms section 2.3.5); the bare 32 bytes are accepted too."""
    if len(value) == _ED25519_BYTES + 2 and value[:2] == bytes([0x04, _ED25519_BYTES]):
        value = value[2:]
    if len(value) != _ED25519_BYTES:
        raise KeyAccessError(f"public key {label!r} holds no valid Ed25519 point")
    return value


def _ed25519_public(session: Session, location: _Location, private: PrivateKey) -> bytes:
    from pkcs11 import Attribute

    key = _public_object(session, location, private)
    if key[Attribute.EC_PARAMS] not in ED25519_EC_PARAMS_NAMES:
        raise KeyAccessError(f"public key {location.uri.object!r} is not an Ed25519 key")
    return _ed25519_point(key[Attribute.EC_POINT], location.uri.object)


@dataclass(frozen=True)
class KeyProtection:
    """Protection attributes of a private key in a token (PKCS#11 v2.40 base section 4.9)."""

    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool

    @property
    def non_extractable(self) -> bool:
        """The key was created in the token and its value can never leave it."""
        return (
            self.sensitive
            and not self.extractable
            and self.always_sensitive
            and self.never_extractable
        )

    def as_dict(self) -> dict[str, bool]:
        return {
            "SENSITIVE": self.sensitive,
            "EXTRACTABLE": self.extractable,
            "ALWAYS_SENSITIVE": self.always_sensitive,
            "NEVER_EXTRACTABLE": self.never_extractable,
        }


def _protection(key: PrivateKey) -> KeyProtection:
    from pkcs11 import Attribute

    return KeyProtection(
        sensitive=bool(key[Attribute.SENSITIVE]),
        extractable=bool(key[Attribute.EXTRACTABLE]),
        always_sensitive=bool(key[Attribute.ALWAYS_SENSITIVE]),
        never_extractable=bool(key[Attribute.NEVER_EXTRACTABLE]),
    )


@dataclass(frozen=True)
class Pkcs11Signer:
    """An ECDSA P-256 private key in a PKCS#11 token; implements the ``Signer`` protocol.

    Holds the token's PIN (as a file signer holds its decrypted key) so that each signature
    can log in afresh; the private key itself never leaves the token.
    """

    uri: str
    _location: _Location = field(repr=False)
    _pin: str = field(repr=False)
    _public: ec.EllipticCurvePublicKey = field(repr=False)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a SHA-256 digest with raw ``CKM_ECDSA``; returns the DER signature.

        The token hashes nothing (SoftHSM2 lacks ``CKM_ECDSA_SHA256``) and returns r || s
        (PKCS#11 v2.40 Current Mechanisms section 2.3.1), re-encoded here as DER
        ``ECDSA-Sig-Value``.
        """
        from pkcs11 import Mechanism, SignMixin

        if len(digest) != hashlib.sha256().digest_size:
            raise InvalidValue("sign_digest expects a SHA-256 digest")
        with _logged_in(self._location, _known(self._pin)) as (session, _):
            key = _private_key(session, self._location)
            if not isinstance(key, SignMixin):  # python-pkcs11 mixes in SignMixin for CKA_SIGN
                raise KeyAccessError(f"{self.uri}: the key is not allowed to sign (CKA_SIGN)")
            raw = key.sign(digest, mechanism=Mechanism.ECDSA)
        if len(raw) != 2 * _P256_BYTES:
            raise KeyAccessError(f"token returned a {len(raw)}-byte ECDSA P-256 signature")
        r = int.from_bytes(raw[:_P256_BYTES], "big")
        s = int.from_bytes(raw[_P256_BYTES:], "big")
        signature = utils.encode_dss_signature(r, s)
        try:  # a mismatched public key object would otherwise go unnoticed until verification
            self._public.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except InvalidSignature as e:
            raise KeyAccessError(
                f"{self.uri}: the token's signature does not match its public key object"
            ) from e
        return signature

    def protection(self) -> KeyProtection:
        """Read the private key's SENSITIVE / EXTRACTABLE attributes from the token."""
        with _logged_in(self._location, _known(self._pin)) as (session, _):
            return _protection(_private_key(session, self._location))


def load_pkcs11_signer(uri: str, pin_source: PinSource) -> Pkcs11Signer:
    """Open the P-256 key named by ``uri``; checks PIN, key type and public key now."""
    location = _locate(uri)
    with _logged_in(location, _ask(pin_source)) as (session, pin):
        private = _private_key(session, location)
        public = _public_key(session, location, private)
    return Pkcs11Signer(str(location.uri), location, pin, public)


def key_attributes(uri: str, pin_source: PinSource) -> KeyProtection:
    """The protection attributes of the private key named by ``uri``."""
    location = _locate(uri)
    with _logged_in(location, _ask(pin_source)) as (session, _):
        return _protection(_private_key(session, location))


def _generate_pair(
    uri: str, pin_source: PinSource, *, ed25519: bool
) -> tuple[_Location, str, bytes]:
    """Generate a key pair in the token; returns where it is, the PIN and CKA_EC_POINT."""
    from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag

    location = _locate(uri)
    label = location.uri.object
    with _logged_in(location, _ask(pin_source), rw=True) as (session, pin):
        if next(iter(session.get_objects({Attribute.LABEL: label})), None) is not None:
            raise KeyAccessError(
                f"refusing to overwrite: token {location.uri.token!r} already holds "
                f"an object labelled {label!r}"
            )
        public, private = session.generate_keypair(
            KeyType.EC_EDWARDS if ed25519 else KeyType.EC,
            id=secrets.token_bytes(16),
            label=label,
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            mechanism=(Mechanism.EC_EDWARDS_KEY_PAIR_GEN if ed25519 else Mechanism.EC_KEY_PAIR_GEN),
            public_template={
                Attribute.EC_PARAMS: ED25519_EC_PARAMS if ed25519 else P256_EC_PARAMS,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.VERIFY: True,
            },
            private_template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.DERIVE: False,
                Attribute.DECRYPT: False,
                Attribute.UNWRAP: False,
            },
        )
        if not _protection(private).non_extractable:  # a token that ignored the template
            private.destroy()
            public.destroy()
            raise KeyAccessError(f"token {location.uri.token!r} would not keep the key sensitive")
        point = bytes(public[Attribute.EC_POINT])
    return location, pin, point


def generate_pkcs11_key(uri: str, pin_source: PinSource) -> Pkcs11Signer:
    """Generate a P-256 key pair inside the token, labelled as ``uri``'s ``object``.

    The private key is TOKEN, PRIVATE, SENSITIVE, not EXTRACTABLE and may only sign.
    An existing object with that label is never replaced.
    """
    location, pin, point = _generate_pair(uri, pin_source, ed25519=False)
    key = _ec_point(point, location.uri.object)
    return Pkcs11Signer(str(location.uri), location, pin, key)


@dataclass(frozen=True)
class Pkcs11Ed25519Signer:
    """An Ed25519 private key in a PKCS#11 token; signs whole messages (``CKM_EDDSA``).

    Implements :class:`chargeward.crypto.ed25519.MessageSigner`.
    """

    uri: str
    _location: _Location = field(repr=False)
    _pin: str = field(repr=False)
    _public: bytes = field(repr=False)

    def public_key_raw(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        """PureEdDSA over ``message`` inside the token (RFC 8032 section 5.1.6)."""
        from pkcs11 import Mechanism, SignMixin

        with _logged_in(self._location, _known(self._pin)) as (session, _):
            key = _private_key(session, self._location, ed25519=True)
            if not isinstance(key, SignMixin):
                raise KeyAccessError(f"{self.uri}: the key is not allowed to sign (CKA_SIGN)")
            signature = bytes(key.sign(message, mechanism=Mechanism.EDDSA))
        try:  # a mismatched public key object would otherwise go unnoticed until verification
            Ed25519PublicKey.from_public_bytes(self._public).verify(signature, message)
        except (InvalidSignature, ValueError) as e:
            raise KeyAccessError(
                f"{self.uri}: the token's signature does not match its public key object"
            ) from e
        return signature

    def protection(self) -> KeyProtection:
        with _logged_in(self._location, _known(self._pin)) as (session, _):
            return _protection(_private_key(session, self._location, ed25519=True))


def load_pkcs11_ed25519_signer(uri: str, pin_source: PinSource) -> Pkcs11Ed25519Signer:
    """Open the Ed25519 key named by ``uri``; checks PIN, key type and public key now."""
    location = _locate(uri)
    with _logged_in(location, _ask(pin_source)) as (session, pin):
        private = _private_key(session, location, ed25519=True)
        public = _ed25519_public(session, location, private)
    return Pkcs11Ed25519Signer(str(location.uri), location, pin, public)


def generate_pkcs11_ed25519_key(uri: str, pin_source: PinSource) -> Pkcs11Ed25519Signer:
    """Generate an Ed25519 key pair inside the token (same protection as P-256 keys)."""
    location, pin, point = _generate_pair(uri, pin_source, ed25519=True)
    public = _ed25519_point(point, location.uri.object)
    return Pkcs11Ed25519Signer(str(location.uri), location, pin, public)
