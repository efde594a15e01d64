"""Attack: offline guessing of a stolen key file's passphrase.

Someone who copies a key file tries passphrases without limit.  What each guess costs is the
whole defence: the old files (PKCS#8, PBKDF2 with 2,048 iterations) cost well under a
millisecond a guess; a file written now costs a scrypt derivation of 128 MiB.  Both are
measured here in the same run, so the assertion is a ratio, not a machine-dependent time.
A hostile file cannot turn the cost against the defender either: parameters that would make
the reader allocate more than the cap are refused before scrypt runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chargeward.crypto import keyfile
from chargeward.crypto.keys import generate_key, load_signer
from chargeward.errors import KeyAccessError
from tests.unit.crypto.test_crypto_keyfile import _with_header

PASSPHRASE = b"correct horse battery staple"


def _seconds_per_guess(path: Path, guesses: int) -> float:
    start = time.perf_counter()
    for i in range(guesses):
        with pytest.raises(KeyAccessError, match="wrong passphrase"):
            load_signer(str(path), lambda i=i: b"guess number %d" % i)
    return (time.perf_counter() - start) / guesses


def test_offline_guess_against_a_new_key_file_costs_100x_an_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old = tmp_path / "old.pem"
    old.write_bytes(  # what write_new_key_file produced before: PBKDF2, 2,048 iterations
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE),
        )
    )
    monkeypatch.setattr(keyfile, "write_params", keyfile.DEFAULT_PARAMS)  # production cost
    monkeypatch.delenv(keyfile.COST_ENV)
    new = tmp_path / "new.pem"
    generate_key(str(new), lambda: PASSPHRASE)  # what a key generated now looks like
    old_cost = _seconds_per_guess(old, 100)
    new_cost = _seconds_per_guess(new, 2)
    assert new_cost >= 100 * old_cost, (old_cost, new_cost)


def test_hostile_key_file_cannot_make_the_reader_allocate_terabytes(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_key(str(path), lambda: PASSPHRASE)
    path.write_bytes(_with_header(path.read_bytes(), n=2**36, r=32))  # 8 PiB of scrypt memory
    start = time.perf_counter()
    with pytest.raises(KeyAccessError, match="more than the 1024 MiB allowed"):
        load_signer(str(path), lambda: PASSPHRASE)
    assert time.perf_counter() - start < 0.05


def test_weakened_key_file_is_refused(tmp_path: Path) -> None:
    """Lowering the cost in the header (to make guessing cheap) breaks the authentication,
    and a header that claims less than the minimum is refused outright."""
    path = tmp_path / "k.pem"
    generate_key(str(path), lambda: PASSPHRASE)
    pem = path.read_bytes()
    path.write_bytes(_with_header(pem, n=2**4))
    with pytest.raises(KeyAccessError, match="less than the minimum"):
        load_signer(str(path), lambda: PASSPHRASE)
    path.write_bytes(_with_header(pem, n=2**15))  # accepted bounds, but not what was written
    with pytest.raises(KeyAccessError, match="wrong passphrase or damaged file"):
        load_signer(str(path), lambda: PASSPHRASE)
