from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fleet import Pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("other-pki"), name="Mallory")


@pytest.fixture(scope="session")
def factory_bundle(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pki.bundle(tmp_path_factory.mktemp("bundles") / "factory-1.0.0.cwb", "1.0.0", 1)
