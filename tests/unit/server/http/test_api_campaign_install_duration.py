"""``POST /api/v1/campaigns`` with a bad ``install_duration``: 422 in the API's error shape,
naming the field, never a 5xx."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.support.api_app import running_api

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("value", ["0", "2d", "soon", True])
async def test_a_bad_install_duration_is_refused_naming_the_field(
    tmp_path: Path, value: object
) -> None:
    doc = {"name": "c1", "release": "r" * 64, "stages": {"canary": 1}, "install_duration": value}
    async with running_api(tmp_path / "data", NOW) as api:
        r = await api.client.post("/api/v1/campaigns", json=doc)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith("install_duration: must be")
