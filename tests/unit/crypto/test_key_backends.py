"""Key backends come from one table keyed by URI scheme (chargeward.crypto.backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

import chargeward
from chargeward.crypto.backends import BACKENDS, FILE, PKCS11, backend_for
from chargeward.crypto.ed25519 import generate_ed25519_key, load_ed25519_signer
from chargeward.crypto.keys import generate_key, load_signer, rewrap_key_file
from chargeward.errors import KeyAccessError

SECRET = b"correct horse battery staple"


@pytest.mark.parametrize(
    ("uri", "backend"),
    [
        ("file:/keys/a.pem", FILE),
        ("file:///keys/a.pem", FILE),
        ("keys/a.pem", FILE),
        ("./odd:name.pem", FILE),
        ("pkcs11:token=t;object=o", PKCS11),
        ("PKCS11:token=t;object=o", PKCS11),
        ("pkcs11:token=t;object=o?module-path=/usr/lib/softhsm/libsofthsm2.so", PKCS11),
    ],
)
def test_the_scheme_picks_the_backend(uri: str, backend: object) -> None:
    assert backend_for(uri) is backend


def test_one_row_per_scheme() -> None:
    assert sorted(BACKENDS) == ["file", "pkcs11"]
    assert (FILE.opened_with, PKCS11.opened_with) == ("passphrase", "pin")
    assert PKCS11.key_file("pkcs11:token=t;object=o") is None


@pytest.mark.parametrize("uri", ["s3:bucket/key.pem", "C:\\keys\\a.pem"])
def test_an_unknown_scheme_is_refused_with_the_old_message(uri: str) -> None:
    scheme = uri.split(":", 1)[0]
    message = f"unsupported key URI scheme {scheme!r} in {uri!r}"
    for call in (
        lambda: load_signer(uri, lambda: SECRET),
        lambda: generate_key(uri, lambda: SECRET),
        lambda: load_ed25519_signer(uri, lambda: SECRET),
        lambda: generate_ed25519_key(uri, lambda: SECRET),
    ):
        with pytest.raises(KeyAccessError) as caught:
            call()
        assert str(caught.value) == message


def test_file_keys_of_both_algorithms_go_through_the_table(tmp_path: Path) -> None:
    p256, ed = tmp_path / "p256.pem", tmp_path / "ed.pem"
    made = generate_key(f"file:{p256}", lambda: SECRET)
    assert load_signer(str(p256), lambda: SECRET).public_key() == made.public_key()
    signer = generate_ed25519_key(f"file:{ed}", lambda: SECRET)
    assert load_ed25519_signer(f"file:{ed}", lambda: SECRET).public_key_raw() == (
        signer.public_key_raw()
    )
    assert FILE.protection(made) is None and FILE.key_file(made.uri) == p256.resolve()
    # The wrong algorithm for the file: the message names the file and the algorithm wanted.
    with pytest.raises(KeyAccessError, match=r"does not hold an Ed25519 key"):
        load_ed25519_signer(str(p256), lambda: SECRET)
    with pytest.raises(KeyAccessError, match=r"does not hold an ECDSA P-256 key"):
        load_signer(str(ed), lambda: SECRET)


def test_a_token_key_is_no_file_to_rewrap() -> None:
    with pytest.raises(KeyAccessError, match=r"^a PKCS#11 key is not a file: nothing to re-wrap$"):
        rewrap_key_file("pkcs11:token=t;object=o", lambda: SECRET)


def test_nothing_outside_the_table_branches_on_the_pkcs11_scheme() -> None:
    src = Path(chargeward.__file__).parent
    branching = [
        str(path.relative_to(src))
        for path in sorted(src.rglob("*.py"))
        if path.name != "pkcs11.py"
        and ("is_pkcs11_uri(" in path.read_text() or '"pkcs11:")' in path.read_text())
    ]
    assert branching == []
