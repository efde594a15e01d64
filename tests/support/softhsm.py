"""Test support: a fresh SoftHSM2 token store per test, driven through the real PKCS#11 module.

SoftHSM2 reads the file named by ``SOFTHSM2_CONF`` when the module is initialised, and
``chargeward.crypto.pkcs11`` initialises the module for every operation, so pointing
``SOFTHSM2_CONF`` at a per-test directory isolates tests within one process (and in CLI
subprocesses, which inherit the environment).

    @pytest.fixture
    def hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
        return use_softhsm(tmp_path / "softhsm", monkeypatch)

    def test_sign(hsm: SoftHsm) -> None:
        signer = generate_key(hsm.uri("signing"), hsm.pin_source)

The PINs below protect throwaway test tokens only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "chargeward-test"
USER_PIN = "test-user-pin-4711"  # test tokens only
SO_PIN = "test-so-pin-0815"  # test tokens only

CONF_ENV = "SOFTHSM2_CONF"
PKCS11_ENV = ("CHARGEWARD_PKCS11_PIN", "CHARGEWARD_PKCS11_MODULE")


@dataclass(frozen=True)
class SoftHsm:
    """One SoftHSM2 token directory with its configuration file."""

    directory: Path
    token: str = TOKEN
    pin: str = USER_PIN

    @property
    def conf(self) -> Path:
        return self.directory / "softhsm2.conf"

    @classmethod
    def create(cls, directory: Path, token: str = TOKEN) -> SoftHsm:
        """Make the directory and config, then initialise ``token`` in it."""
        (directory / "tokens").mkdir(parents=True)
        hsm = cls(directory, token)
        hsm.conf.write_text(
            f"directories.tokendir = {directory / 'tokens'}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        hsm.init_token(token)
        return hsm

    def init_token(self, label: str, pin: str = USER_PIN) -> None:
        """``softhsm2-util --init-token --free``: a new token in the next free slot."""
        subprocess.run(
            [
                "softhsm2-util",
                *("--init-token", "--free", "--label", label),
                *("--so-pin", SO_PIN, "--pin", pin),
            ],
            env={**os.environ, CONF_ENV: str(self.conf)},
            check=True,
            capture_output=True,
            timeout=30,
        )

    def uri(self, key: str, token: str | None = None) -> str:
        """``pkcs11:token=...;object=...`` for plain labels (no percent-encoding needed)."""
        return f"pkcs11:token={token or self.token};object={key}"

    def pin_source(self) -> bytes:
        return self.pin.encode()

    def env(self) -> dict[str, str]:
        """Environment for a ``chargeward`` subprocess using this token store."""
        return {CONF_ENV: str(self.conf), "CHARGEWARD_PKCS11_PIN": self.pin}

    @contextlib.contextmanager
    def session(self, token: str | None = None) -> Iterator[pkcs11.Session]:
        """A logged-in python-pkcs11 session, independent of Chargeward, for inspection."""
        previous = os.environ.get(CONF_ENV)
        os.environ[CONF_ENV] = str(self.conf)
        lib = pkcs11.lib(os.path.realpath(MODULE))
        try:
            with lib.get_token(token_label=token or self.token).open(user_pin=self.pin) as s:
                yield s
        finally:
            lib.finalize()
            if previous is None:
                del os.environ[CONF_ENV]
            else:
                os.environ[CONF_ENV] = previous


def use_softhsm(directory: Path, monkeypatch: pytest.MonkeyPatch, token: str = TOKEN) -> SoftHsm:
    """Create a token store in ``directory`` and make it the process's SoftHSM2 for a test."""
    hsm = SoftHsm.create(directory, token)
    monkeypatch.setenv(CONF_ENV, str(hsm.conf))
    for name in PKCS11_ENV:
        monkeypatch.delenv(name, raising=False)
    return hsm
