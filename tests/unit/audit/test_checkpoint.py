"""Signed tree heads: C2SP checkpoints in C2SP signed notes, Ed25519 note keys.

Known answers come from the spec's own definitions (key ID computed here with hashlib) and
from the published example of golang.org/x/mod/sumdb/note (the PeterNeumann key): Ed25519 is
deterministic, so signing its text with its key must give its note byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from chargeward.audit.checkpoint import (
    DEFAULT_LIMITS,
    Checkpoint,
    MalformedNote,
    NoteSignature,
    SignedNote,
    WrongOrigin,
    key_id,
    open_checkpoint,
    parse_checkpoint_text,
    parse_note,
    parse_vkey,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_note,
)
from chargeward.audit.merkle import MemoryTree, root
from chargeward.crypto.ed25519 import (
    Ed25519Signer,
    generate_ed25519_key,
    load_ed25519_signer,
    verify_ed25519,
)
from chargeward.crypto.keys import generate_key
from chargeward.errors import BadSignature, ConfigError, KeyAccessError

PASSPHRASE = b"correct horse battery staple"
ORIGIN = "audit.chargeward.example/prod"

# golang.org/x/mod/sumdb/note, package documentation and note_test.go.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def passphrase() -> bytes:
    return PASSPHRASE


def seed_signer(seed: bytes, uri: str = "test:seed") -> Ed25519Signer:
    return Ed25519Signer(uri, ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def go_signer() -> Ed25519Signer:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[:1] == b"\x01"
    return seed_signer(raw[1:], "test:PeterNeumann")


@pytest.fixture(scope="module")
def signer() -> Ed25519Signer:
    return seed_signer(hashlib.sha256(b"chargeward audit log test key").digest())


@pytest.fixture(scope="module")
def head() -> Checkpoint:
    tree = MemoryTree()
    tree.extend([b"release.build", b"release.sbom", b"release.scan"])
    return Checkpoint(ORIGIN, 3, root(3, tree))


@pytest.fixture(scope="module")
def note(head: Checkpoint, signer: Ed25519Signer) -> str:
    return sign_checkpoint(head, signer)


@pytest.fixture(scope="module")
def vkey(signer: Ed25519Signer) -> str:
    return verifier_key(ORIGIN, signer.public_key_raw()).vkey


# -- known answers -------------------------------------------------------------------------------


def test_key_id_is_computed_as_the_spec_defines_it() -> None:
    public = base64.b64decode(GO_VKEY.split("+", 2)[2])[1:]
    by_hand = hashlib.sha256(b"PeterNeumann" + b"\x0a" + b"\x01" + public).digest()[:4]
    assert by_hand.hex() == "c74f20a3"
    assert key_id("PeterNeumann", public) == by_hand
    assert verifier_key("PeterNeumann", public).vkey == GO_VKEY


def test_the_go_example_note_is_reproduced_byte_for_byte() -> None:
    signer = go_signer()
    assert verifier_key("PeterNeumann", signer.public_key_raw()).vkey == GO_VKEY
    assert sign_note(GO_TEXT, "PeterNeumann", signer).format() == GO_NOTE
    parsed = parse_note(GO_NOTE)
    assert parsed.text == GO_TEXT
    assert verify_note(parsed, [parse_vkey(GO_VKEY)]) == [parse_vkey(GO_VKEY)]
    with pytest.raises(BadSignature):
        verify_note(
            parse_note(GO_NOTE.replace("cryptography", "cryptographY")), [parse_vkey(GO_VKEY)]
        )


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY,
        "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop",
        "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6",  # '+' inside the base64
    ],
)
def test_published_verifier_keys_parse_and_spell_back(vkey: str) -> None:
    key = parse_vkey(vkey)
    assert key.vkey == vkey
    assert key.key_id == key_id(key.name, key.public_key)


# -- checkpoints: round trip and refusals --------------------------------------------------------


def test_checkpoint_round_trip(head: Checkpoint, note: str, vkey: str) -> None:
    root_b64 = base64.b64encode(head.root_hash).decode()
    assert note.startswith(f"{ORIGIN}\n3\n{root_b64}\n\n— {ORIGIN} ")
    assert open_checkpoint(note, parse_vkey(vkey)) == head
    assert open_checkpoint(note.encode(), parse_vkey(vkey)) == head
    assert parse_checkpoint_text(parse_note(note).text) == head


def test_extension_lines_round_trip(signer: Ed25519Signer, head: Checkpoint) -> None:
    extended = Checkpoint(head.origin, head.size, head.root_hash, ("timestamp 1767225600",))
    key = verifier_key(ORIGIN, signer.public_key_raw())
    assert open_checkpoint(sign_checkpoint(extended, signer), key) == extended


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n3\n", "\n4\n"),  # the tree size
        (f"{ORIGIN}\n", "audit.chargeward.example/prod\u200b\n"),  # the origin
        ("\n\n", "\nextension\n\n"),  # an added extension line
    ],
)
def test_a_changed_body_is_refused(note: str, vkey: str, old: str, new: str) -> None:
    changed = note.replace(old, new, 1)
    assert changed != note
    with pytest.raises(BadSignature, match="is invalid"):
        open_checkpoint(changed, parse_vkey(vkey), origin=ORIGIN)


def test_a_changed_root_is_refused(head: Checkpoint, note: str, vkey: str) -> None:
    old = base64.b64encode(head.root_hash).decode()
    new = base64.b64encode(bytes([head.root_hash[0] ^ 1]) + head.root_hash[1:]).decode()
    with pytest.raises(BadSignature, match="is invalid"):
        open_checkpoint(note.replace(old, new), parse_vkey(vkey))


def test_a_changed_signature_is_refused(note: str, vkey: str) -> None:
    signed = parse_note(note)
    sig = signed.signatures[0]
    for flipped in (
        bytes([sig.signature[0] ^ 1]) + sig.signature[1:],
        sig.signature[:-1] + bytes([sig.signature[-1] ^ 0x80]),
    ):
        bad = SignedNote(signed.text, (NoteSignature(sig.key_name, sig.key_id, flipped),))
        with pytest.raises(BadSignature, match="is invalid"):
            open_checkpoint(bad.format(), parse_vkey(vkey))
    truncated = SignedNote(
        signed.text, (NoteSignature(sig.key_name, sig.key_id, sig.signature[:-1]),)
    )
    with pytest.raises(BadSignature):
        open_checkpoint(truncated.format(), parse_vkey(vkey))


def test_a_changed_key_name_or_key_id_is_an_unknown_key(note: str, vkey: str) -> None:
    renamed = note.replace(f"— {ORIGIN} ", f"— {ORIGIN}x ")
    with pytest.raises(BadSignature, match="no signature from a trusted key"):
        open_checkpoint(renamed, parse_vkey(vkey))
    sig = parse_note(note).signatures[0]
    other_id = NoteSignature(sig.key_name, bytes(4), sig.signature)
    with pytest.raises(BadSignature, match="no signature from a trusted key"):
        open_checkpoint(SignedNote(parse_note(note).text, (other_id,)).format(), parse_vkey(vkey))


def test_another_key_of_the_same_name_is_refused(note: str) -> None:
    impostor = seed_signer(bytes(32))
    with pytest.raises(BadSignature, match="no signature from a trusted key"):
        open_checkpoint(note, verifier_key(ORIGIN, impostor.public_key_raw()))


def test_unknown_signatures_are_ignored_and_a_bad_known_one_rejects_the_note(
    signer: Ed25519Signer, head: Checkpoint, vkey: str
) -> None:
    witness = seed_signer(b"\x07" * 32)
    ours = sign_note(head.text(), ORIGIN, signer).signatures[0]
    theirs = sign_note(head.text(), "witness.example", witness).signatures[0]
    cosigned = SignedNote(head.text(), (theirs, ours)).format()
    assert open_checkpoint(cosigned, parse_vkey(vkey)) == head
    both = [parse_vkey(vkey), verifier_key("witness.example", witness.public_key_raw())]
    assert verify_note(parse_note(cosigned), both) == [both[1], both[0]]
    broken = NoteSignature(theirs.key_name, theirs.key_id, bytes(64))
    with pytest.raises(BadSignature, match="witness"):
        verify_note(parse_note(SignedNote(head.text(), (broken, ours)).format()), both)


def test_a_checkpoint_of_another_log_is_refused(signer: Ed25519Signer, head: Checkpoint) -> None:
    other = Checkpoint("audit.chargeward.example/staging", head.size, head.root_hash)
    note = sign_checkpoint(other, signer, key_name=ORIGIN)
    key = verifier_key(ORIGIN, signer.public_key_raw())
    with pytest.raises(WrongOrigin, match="staging"):
        open_checkpoint(note, key)
    assert open_checkpoint(note, key, origin=other.origin) == other


def test_a_signed_note_that_is_not_a_checkpoint_is_refused(signer: Ed25519Signer) -> None:
    key = verifier_key(ORIGIN, signer.public_key_raw())
    note = sign_note(f"{ORIGIN}\n007\nAAAA\n", ORIGIN, signer).format()
    with pytest.raises(MalformedNote, match="tree size"):
        open_checkpoint(note, key)


# -- malformed input -----------------------------------------------------------------------------

SIG = "— k " + base64.b64encode(b"\x00" * 68).decode() + "\n"


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("text\n" + SIG, "no blank line"),
        ("text\n\n", "no signature lines"),
        ("text\n\n" + SIG[:-1], "does not end with a newline"),
        ("text\r\n\n" + SIG, "control character"),
        ("te\txt\n\n" + SIG, "control character"),
        (b"text\xff\n\n" + SIG.encode(), "not valid UTF-8"),
        ("text\n\n- k AAAAAAAA\n", "em dash"),
        ("text\n\n—k AAAAAAAA\n", "em dash"),
        ("text\n\n" + SIG + "\n", "no signature lines"),  # a blank line after them
        ("text\n\n— k+1 AAAAAAAA\n", "key name"),
        ("text\n\n— k AAAAAAAA extra\n", "key name"),
        ("text\n\n—  AAAAAAAA\n", "key name"),
        ("text\n\n— k AAAA@AAA\n", "not valid base64"),
        ("text\n\n— k AAAAAAA\n", "not valid base64"),
        ("text\n\n— k AAAAAAB=\n", "not canonical base64"),
        ("text\n\n— k AAAAAA==\n", "too short"),
        ("text\n\n— k " + "A" * 8000 + "\n", "over the size cap"),
        ("text\n\n" + SIG * (DEFAULT_LIMITS.max_signatures + 1), "signatures, over the cap"),
        ("x" * DEFAULT_LIMITS.max_note_bytes + "\n\n" + SIG, "over the"),
    ],
)
def test_malformed_notes_are_refused_with_a_clear_error(note: str | bytes, message: str) -> None:
    with pytest.raises(MalformedNote, match=message):
        parse_note(note)


def test_the_text_ends_at_the_last_blank_line() -> None:
    parsed = parse_note("para one\n\npara two\n\n" + SIG)
    assert parsed.text == "para one\n\npara two\n"
    assert len(parsed.signatures) == 1
    assert len(parse_note("t\n\n" + SIG * 16).signatures) == 16  # signed-note: MUST accept 16


ROOT = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n1\n{ROOT}", "does not end with a newline"),
        ("o\n1\n", "origin, tree size and root hash"),
        (f"\n1\n{ROOT}\n", "line 1 is empty"),
        (f"o\n1\n{ROOT}\n\n", "line 4 is empty"),
        (f"o\n01\n{ROOT}\n", "tree size"),
        (f"o\n-1\n{ROOT}\n", "tree size"),
        (f"o\n+1\n{ROOT}\n", "tree size"),
        (f"o\n 1\n{ROOT}\n", "tree size"),
        (f"o\n1.0\n{ROOT}\n", "tree size"),
        (f"o\n{2**64}\n{ROOT}\n", "tree size"),
        (f"o\n{'9' * 30}\n{ROOT}\n", "tree size"),
        ("o\n1\nAAAA\n", "3 bytes, not 32"),
        (f"o\n1\n{ROOT[:-1]}\n", "not valid base64"),
        (f"o\n1\n{ROOT.replace('=', '')}\n", "not valid base64"),
        ("o\n1\n" + base64.b64encode(bytes(33)).decode() + "\n", "33 bytes"),
        (f"o\n1\n{ROOT}\n" + "ext\n" * 17, "over the cap"),
        (f"{'o' * 1025}\n1\n{ROOT}\n", "over 1024 characters"),
    ],
)
def test_malformed_checkpoints_are_refused_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(MalformedNote, match=message):
        parse_checkpoint_text(text)


def test_tree_size_zero_and_the_largest_size_parse() -> None:
    assert parse_checkpoint_text(f"o\n0\n{ROOT}\n").size == 0
    assert parse_checkpoint_text(f"o\n{2**64 - 1}\n{ROOT}\n").size == 2**64 - 1


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("PeterNeumann", "<name>"),
        ("PeterNeumann+c74f20a3", "<name>"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "<name>"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "<name>"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "<name>"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNaumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+c74f20a3+Alpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "type 0x01"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy", "type 0x01"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str, message: str) -> None:
    with pytest.raises(MalformedNote, match=message):
        parse_vkey(vkey)


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint("", 1, bytes(32)),
        Checkpoint("two\nlines", 1, bytes(32)),
        Checkpoint("o", -1, bytes(32)),
        Checkpoint("o", 2**64, bytes(32)),
        Checkpoint("o", 1, bytes(31)),
        Checkpoint("o", 1, bytes(32), ("",)),
    ],
)
def test_invalid_checkpoints_are_not_formatted(checkpoint: Checkpoint) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        checkpoint.text()


def test_invalid_key_names_and_texts_are_not_signed(signer: Ed25519Signer) -> None:
    for name in ("", "a b", "a+b", "a\u2003b"):
        with pytest.raises(ValueError, match="key name"):
            sign_note("text\n", name, signer)
    for text in ("no newline", "tab\there\n"):
        with pytest.raises(ValueError, match="newline"):
            sign_note(text, "k", signer)


# -- Ed25519 note keys by URI --------------------------------------------------------------------


def test_a_generated_file_key_loads_back_and_signs_checkpoints(
    tmp_path: Path, head: Checkpoint
) -> None:
    uri = f"file:{tmp_path / 'log.key'}"
    created = generate_ed25519_key(uri, passphrase)
    loaded = load_ed25519_signer(uri, passphrase)
    assert loaded.uri == created.uri == f"file:{(tmp_path / 'log.key').resolve()}"
    assert loaded.public_key_raw() == created.public_key_raw()
    assert (tmp_path / "log.key").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "log.key").read_bytes()
    key = parse_vkey(verifier_key(ORIGIN, created.public_key_raw()).vkey)
    assert open_checkpoint(sign_checkpoint(head, loaded), key) == head
    assert verify_ed25519(loaded.public_key_raw(), b"m", loaded.sign(b"m"))
    assert not verify_ed25519(loaded.public_key_raw(), b"n", loaded.sign(b"m"))
    assert not verify_ed25519(loaded.public_key_raw()[:31], b"m", loaded.sign(b"m"))


def test_key_files_are_protected(tmp_path: Path) -> None:
    uri = str(tmp_path / "log.key")
    with pytest.raises(ConfigError, match="at least"):
        generate_ed25519_key(uri, lambda: b"short")
    generate_ed25519_key(uri, passphrase)
    with pytest.raises(KeyAccessError, match="refusing to overwrite"):
        generate_ed25519_key(uri, passphrase)
    with pytest.raises(KeyAccessError, match="wrong passphrase"):
        load_ed25519_signer(uri, lambda: b"not the passphrase")
    generate_key(str(tmp_path / "p256.key"), passphrase)
    with pytest.raises(KeyAccessError, match="not hold an Ed25519 key"):
        load_ed25519_signer(str(tmp_path / "p256.key"), passphrase)
    (tmp_path / "plain.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(KeyAccessError, match="plaintext keys are refused"):
        load_ed25519_signer(str(tmp_path / "plain.key"), passphrase)
    with pytest.raises(KeyAccessError, match="cannot read"):
        load_ed25519_signer(str(tmp_path / "missing.key"), passphrase)


def test_a_pkcs11_ed25519_key_in_a_missing_token_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Token keys are covered in test_checkpoint_key_pkcs11.py; here: no such token.
    monkeypatch.setenv("SOFTHSM2_CONF", str(tmp_path / "absent.conf"))
    with pytest.raises(KeyAccessError, match="PKCS#11"):
        load_ed25519_signer("pkcs11:token=audit;object=log", passphrase)
