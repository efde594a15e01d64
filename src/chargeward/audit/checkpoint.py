"""Signed tree heads as C2SP checkpoints in C2SP signed notes (Ed25519).

A checkpoint (c2sp.org/tlog-checkpoint) is the note text ``<origin>\\n<size>\\n<base64
root>\\n`` (plus optional extension lines); a signed note (c2sp.org/signed-note) appends a
blank line and one line per signature, ``— <key name> <base64(4-byte key ID || sig)>``.
Signing goes through :mod:`chargeward.crypto.ed25519`; this module only formats and parses.

    head = Checkpoint("audit.chargeward.example/prod", 2, bytes(32))
    note = sign_checkpoint(head, signer)
    key = verifier_key(head.origin, signer.public_key_raw())
    key.vkey  # pin this text in auditors and chargers
    # -> 'audit.chargeward.example/prod+1a2b3c4d+AX...'
    open_checkpoint(note, parse_vkey(key.vkey)) == head
    # -> True

Parsing is strict and capped (:class:`NoteLimits`): anything malformed raises
:class:`MalformedNote`; a signature that does not verify raises
:class:`~chargeward.errors.BadSignature`; a checkpoint of another log, :class:`WrongOrigin`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from chargeward.crypto.ed25519 import PUBLIC_KEY_SIZE, MessageSigner, verify_ed25519
from chargeward.errors import BadSignature, InvalidValue, TrustError

EM_DASH = "\u2014"
SIGNATURE_PREFIX = EM_DASH + " "
ED25519_TYPE = b"\x01"  # signed-note signature type 0x01: Ed25519
KEY_ID_SIZE = 4
HASH_SIZE = 32
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")  # tlog-checkpoint: decimal, no leading zeroes
_HEX8_RE = re.compile(r"[0-9a-fA-F]{8}")
MAX_TREE_SIZE = 2**64 - 1


class MalformedNote(TrustError):
    """A signed note, checkpoint or verifier key is not in the C2SP format (or over a cap)."""


class WrongOrigin(TrustError):
    """A validly signed checkpoint names another log than the one expected."""


@dataclass(frozen=True)
class NoteLimits:
    """Every cap applied to untrusted notes, in one place."""

    max_note_bytes: int = 64 * 1024
    # signed-note: verifiers MUST accept at least 16 signatures.
    max_signatures: int = 32
    max_signature_bytes: int = 4 + 4096  # key ID + room for larger (post-quantum) schemes
    max_text_lines: int = 3 + 16  # checkpoint lines + extension lines
    max_line_chars: int = 1024


DEFAULT_LIMITS = NoteLimits()


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and the signature bytes."""

    key_name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIGNATURE_PREFIX}{self.key_name} {blob}\n"


@dataclass(frozen=True)
class SignedNote:
    """Note text (ending in a newline) and its signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        """The wire form: text, blank line, signature lines (signed-note "Format")."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 note verifier key: name, key ID and 32-byte public key."""

    name: str
    key_id: bytes
    public_key: bytes

    @property
    def vkey(self) -> str:
        """``<name>+<hex key ID>+<base64(0x01 || public key)>`` (golang.org/x/mod/sumdb/note)."""
        blob = base64.b64encode(ED25519_TYPE + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{blob}"


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: log origin, tree size, RFC 6962 root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text (tlog-checkpoint "Note text"); checks every field."""
        _check_line(self.origin, "origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise InvalidValue(f"tree size {self.size} out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise InvalidValue(f"root hash is {len(self.root_hash)} bytes, not {HASH_SIZE}")
        for line in self.extensions:
            _check_line(line, "extension line")
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )


def _check_line(line: str, what: str) -> None:
    if not line or any(ord(c) < 0x20 for c in line):
        raise InvalidValue(f"{what} must be non-empty, one line, without control characters")


def _valid_key_name(name: str) -> bool:
    """signed-note: key names are non-empty, without Unicode spaces or plus (U+002B)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4] (signed-note, Ed25519)."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:KEY_ID_SIZE]


def verifier_key(name: str, public_key: bytes) -> VerifierKey:
    """The verifier key for an Ed25519 public key under key name ``name``."""
    if not _valid_key_name(name):
        raise InvalidValue(f"invalid note key name {name!r}: empty, or has a space or '+'")
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidValue(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
    return VerifierKey(name, key_id(name, public_key), public_key)


def _b64(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4): padded, canonical, nothing else."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedNote(f"{what} is not valid base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedNote(f"{what} is not canonical base64")
    return raw


def parse_vkey(vkey: str) -> VerifierKey:
    """Parse ``<name>+<hex key ID>+<base64(0x01 || public key)>``; the key ID must match."""
    name, _, rest = vkey.partition("+")
    hex_id, _, blob = rest.partition("+")  # the base64 may itself contain '+'
    if not _valid_key_name(name) or not _HEX8_RE.fullmatch(hex_id) or not blob:
        raise MalformedNote("verifier key is not <name>+<8 hex digits>+<base64 key>")
    raw = _b64(blob, "verifier key material")
    if raw[:1] != ED25519_TYPE or len(raw) != 1 + PUBLIC_KEY_SIZE:
        raise MalformedNote("verifier key is not an Ed25519 (type 0x01) key")
    key = verifier_key(name, raw[1:])
    if key.key_id != bytes.fromhex(hex_id):
        raise MalformedNote(f"verifier key ID {hex_id} does not match name and key")
    return key


def parse_note(note: str | bytes, limits: NoteLimits = DEFAULT_LIMITS) -> SignedNote:
    """Split a signed note into text and signatures (signed-note "Format"); no verification."""
    raw = note.encode() if isinstance(note, str) else note
    if len(raw) > limits.max_note_bytes:
        raise MalformedNote(f"note is {len(raw)} bytes, over the {limits.max_note_bytes} cap")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedNote("note is not valid UTF-8") from e
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise MalformedNote("note holds a control character other than newline")
    split = text.rfind("\n\n")  # the text ends at the last empty line
    if split < 0:
        raise MalformedNote("note has no blank line before its signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block:
        raise MalformedNote("note has no signature lines")
    if not block.endswith("\n"):
        raise MalformedNote("note does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > limits.max_signatures:
        raise MalformedNote(f"note has {len(lines)} signatures, over the cap")
    return SignedNote(body, tuple(_signature(line, limits) for line in lines))


def _signature(line: str, limits: NoteLimits) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNote("a signature line does not start with an em dash and a space")
    parts = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2 or not _valid_key_name(parts[0]):
        raise MalformedNote("a signature line is not '— <key name> <base64 signature>'")
    if len(parts[1]) > (limits.max_signature_bytes + 2) // 3 * 4:
        raise MalformedNote(f"signature of {parts[0]!r} is over the size cap")
    blob = _b64(parts[1], f"signature of {parts[0]!r}")
    if len(blob) <= KEY_ID_SIZE:
        raise MalformedNote(f"signature of {parts[0]!r} is too short")
    return NoteSignature(parts[0], blob[:KEY_ID_SIZE], blob[KEY_ID_SIZE:])


def sign_note(text: str, key_name: str, signer: MessageSigner) -> SignedNote:
    """Sign note text (which must end in a newline) with an Ed25519 signer."""
    if not text.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise InvalidValue("note text must end in a newline and hold no other control characters")
    key = verifier_key(key_name, signer.public_key_raw())
    signature = NoteSignature(key_name, key.key_id, signer.sign(text.encode()))
    return SignedNote(text, (signature,))


def verify_note(note: SignedNote, keys: Sequence[VerifierKey]) -> list[VerifierKey]:
    """The known keys whose signatures verify (signed-note "Signatures").

    Signatures from unknown keys (name and ID not both matching) are ignored; a failing
    signature from a known key rejects the whole note, and so does having none that verify.
    """
    known = {(k.name, k.key_id): k for k in keys}
    verified: list[VerifierKey] = []
    message = note.text.encode()
    for sig in note.signatures:
        key = known.get((sig.key_name, sig.key_id))
        if key is None:
            continue
        if not verify_ed25519(key.public_key, message, sig.signature):
            raise BadSignature(f"note signature of {key.name} ({key.key_id.hex()}) is invalid")
        verified.append(key)
    if not verified:
        raise BadSignature("note carries no signature from a trusted key")
    return verified


def parse_checkpoint_text(text: str, limits: NoteLimits = DEFAULT_LIMITS) -> Checkpoint:
    """Parse checkpoint note text (tlog-checkpoint "Note text"); no signature check."""
    if not text.endswith("\n"):
        raise MalformedNote("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedNote("checkpoint needs origin, tree size and root hash lines")
    if len(lines) > limits.max_text_lines:
        raise MalformedNote(f"checkpoint has {len(lines)} lines, over the cap")
    for n, line in enumerate(lines, 1):
        if not line:
            raise MalformedNote(f"checkpoint line {n} is empty")
        if len(line) > limits.max_line_chars:
            raise MalformedNote(f"checkpoint line {n} is over {limits.max_line_chars} characters")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE_RE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise MalformedNote("checkpoint tree size is not a decimal number without leading zeroes")
    root_hash = _b64(root_text, "checkpoint root hash")
    if len(root_hash) != HASH_SIZE:
        raise MalformedNote(f"checkpoint root hash is {len(root_hash)} bytes, not {HASH_SIZE}")
    return Checkpoint(origin, int(size_text), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: MessageSigner, key_name: str = "") -> str:
    """The signed-note text of ``checkpoint``, signed under ``key_name`` (default: origin)."""
    return sign_note(checkpoint.text(), key_name or checkpoint.origin, signer).format()


def open_checkpoint(
    note: str | bytes,
    key: VerifierKey,
    *,
    origin: str | None = None,
    limits: NoteLimits = DEFAULT_LIMITS,
) -> Checkpoint:
    """Parse, verify under ``key`` and return the checkpoint in ``note``.

    The origin line must equal ``origin`` (default: the key's name, as tlog-checkpoint
    recommends), so a checkpoint of another log signed by the same key is refused.
    """
    signed = parse_note(note, limits)
    verify_note(signed, [key])
    checkpoint = parse_checkpoint_text(signed.text, limits)
    expected = key.name if origin is None else origin
    if checkpoint.origin != expected:
        raise WrongOrigin(f"checkpoint is for log {checkpoint.origin!r}, not {expected!r}")
    return checkpoint
