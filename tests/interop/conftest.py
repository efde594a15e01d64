"""Fixtures of the tests against a real ``chargeward server`` (test_ocpp_rpc_station*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Pki, Server, assert_no_crash, running_server


@pytest.fixture(scope="module")
def update_bundle(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pki.bundle(tmp_path_factory.mktemp("interop") / "acme-1.1.0.cwb", "1.1.0", 2)


@pytest.fixture
def server(tmp_path: Path, pki: Pki) -> Iterator[Server]:
    with running_server(tmp_path, pki) as srv:
        yield srv
    assert_no_crash(srv.proc.output())
