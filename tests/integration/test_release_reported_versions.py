"""``chargeward release upload --reported-version/--reported-version-pattern`` against a real
server on loopback (ADR 0037): the declaration reaches the release detail; a bad pattern is
refused by the API with a 422 naming the field (the CLI's own refusal:
``tests/unit/cli/test_cli_release_reported_versions.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.support.fleet import Pki, cli, running_server


def test_upload_declares_what_stations_report_and_bad_patterns_are_refused(
    tmp_path: Path, pki: Pki
) -> None:
    bundle = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    with running_server(tmp_path, pki) as srv:
        data = ("--data-dir", str(srv.data_dir))
        with srv.http as c:
            r = c.post(
                "/api/v1/releases",
                params={"reported_version_pattern": "AC22=(a+)+"},
                content=bundle.read_bytes(),
            )
        assert r.status_code == 422 and r.json()["error"]["field"] == "reported_version_pattern"
        assert srv.api("GET", "/api/v1/releases") == []

        out = cli(
            "release", "upload", str(bundle), "--reported-version", "AC22=TP-FW 1.1.0-b7",
            "--reported-version-pattern", r"AC22=TP-FW 1\.1\.0-b[0-9]+", *data,
        ).stdout  # fmt: skip
        assert "AC22 reports it as: TP-FW 1.1.0-b7, /TP-FW 1\\.1\\.0-b[0-9]+/" in out
        [release] = srv.api("GET", "/api/v1/releases")
        assert release["reported_versions"] == {
            "AC22": {"versions": ["TP-FW 1.1.0-b7"], "pattern": r"TP-FW 1\.1\.0-b[0-9]+"}
        }
