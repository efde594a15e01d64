from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.crypto import keyfile
from chargeward.server.store.db import Database
from tests.support.cli_runner import RUNNER_PASSPHRASE
from tests.support.databases import PostgresTemplates, postgres_database, sqlite_url
from tests.support.fleet import Pki
from tests.support.junit_provenance import record_run
from tests.support.tls import TlsPki

# The CLI's rich consoles are made when chargeward.cli is first imported (by a test module,
# after this file) and fold long cells to the terminal width.  Test processes have no
# terminal, so every test, in process or in a worker, gets the same wide console: assertions
# about digests and window lists must not depend on wrapping.
os.environ.setdefault("COLUMNS", "200")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The JUnit report names the commit and environment it ran under (evidence packs)."""
    record_run(session.config)


# Key files made by tests use scrypt's minimum cost (16 MiB, ~50 ms to open) rather than the
# production default (128 MiB, ~0.5 s): the suite makes and opens hundreds of keys, many in CLI
# subprocesses (which inherit the environment).  Tests of the cost itself pass
# keyfile.DEFAULT_PARAMS explicitly.
keyfile.write_params = keyfile.MINIMUM_PARAMS
os.environ[keyfile.COST_ENV] = "14"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("other-pki"), name="Mallory")


@pytest.fixture(scope="module")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    """A charger CA and a CSMS server certificate for 127.0.0.1 (tests/support/tls.py)."""
    return TlsPki.create(tmp_path_factory.mktemp("tls-pki"))


@pytest.fixture(scope="session")
def factory_bundle(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pki.bundle(tmp_path_factory.mktemp("bundles") / "factory-1.0.0.cwb", "1.0.0", 1)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CLI runner in ``tmp_path`` with the test key passphrase set."""
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", RUNNER_PASSPHRASE)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


# Storage on both backends: ``database_url`` runs a test once on SQLite and once on a fresh
# PostgreSQL database (see tests/support/databases.py); ``db`` is that database, opened.


@pytest.fixture(scope="session")
def postgres_templates() -> Iterator[PostgresTemplates]:
    templates = PostgresTemplates()
    yield templates
    templates.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_templates: PostgresTemplates
) -> Iterator[str]:
    """A database URL on each backend, migrated to head (SQLite: on first open)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "sqlite")
        return
    with postgres_database(postgres_templates.template()) as url:
        yield url


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(data_dir=tmp_path / "sqlite", url=database_url)
    try:
        yield database
    finally:
        await database.close()
