"""One PKI and factory bundle (firmware 1.0.0) per test module: making them is the slow part
of provisioning a charger (tests.support.agent_harness.provisioned_charger)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fleet import Pki


@pytest.fixture(scope="module")
def charger_factory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path]:
    d = tmp_path_factory.mktemp("factory")
    pki = Pki.create(d / "pki")
    return pki, pki.bundle(d / "factory.cwb", "1.0.0", 1)
