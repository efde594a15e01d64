"""``chargeward agent init --tuf-root --customer`` and ``agent run``, as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fleet import MODEL, Pki, cli
from tests.support.tufrepo import TufRepo

ENV = {"CHARGEWARD_STATION_PASSWORD": "fixture-password-0123456789"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path, Path]:
    d = tmp_path_factory.mktemp("tuf-cli")
    pki = Pki.create(d / "pki")
    root_json = d / "root.json"
    root_json.write_bytes(TufRepo().root_json())
    return pki, pki.bundle(d / "factory.cwb", "1.0.0", 1), root_json


def _init(state: Path, setup: tuple[Pki, Path, Path], *extra: str, check: bool = True) -> str:
    pki, factory, _ = setup
    args = ["agent", "init", "--state-dir", str(state), "--station-id", "CP-CLI"]
    args += ["--model", MODEL, "--root", str(pki.root_pem), "--factory-bundle", str(factory)]
    r = cli(*args, *extra, env=ENV, check=check)
    return _flat(r.stdout + r.stderr) + f" exit {r.returncode}"


def _flat(text: str) -> str:
    """Output without the console's line wrapping."""
    return " ".join(text.split())


def test_init_with_tuf_root_and_customer(tmp_path: Path, setup: tuple[Pki, Path, Path]) -> None:
    state = tmp_path / "state"
    out = _init(state, setup, "--tuf-root", str(setup[2]), "--customer", "fleet-a")
    assert "TUF repository checks on" in out
    status = _flat(cli("agent", "status", "--state-dir", str(state)).stdout)
    assert "TUF repository checks: on, customer fleet-a" in status
    r = cli("agent", "run", "--state-dir", str(state), "--csms", "ws://127.0.0.1:9/", check=False)
    assert r.returncode == 6
    assert "CHARGEWARD_REPOSITORY_URL" in _flat(r.stderr) and "Traceback" not in r.stderr


def test_init_refuses_a_file_that_is_not_tuf_root_metadata(
    tmp_path: Path, setup: tuple[Pki, Path, Path]
) -> None:
    bogus = tmp_path / "root.json"
    bogus.write_text('{"signed": {"_type": "timestamp"}}')
    out = _init(tmp_path / "state", setup, "--tuf-root", str(bogus), check=False)
    assert "not usable as TUF root metadata" in out and out.endswith("exit 6")
    assert "Traceback" not in out
    assert not (tmp_path / "state" / "identity.json").exists()
