"""Approvers sign customer-locked releases with the CLI (issue 26 point 4, ADR 0026).

Through the real server and the real ``chargeward release approve``: a release locked to
fleet-a (its own tenant role) and then a fleet-wide release (which re-signs the tenant role),
each approved by 2 of 3 approvers who are shown what every role file adds, then published.
A plain python-tuf client of fleet-a's station (HTTP Basic) verifies both; an anonymous one
verifies the fleet-wide release and learns nothing of fleet-a's.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadError, DownloadHTTPError, RepositoryError
from tuf.ngclient import FetcherInterface, Updater

from chargeward.model.targets import firmware_target_path, tenant_path, tenant_role
from tests.integration.test_release_approval import acting
from tests.support.fleet import MODEL, Pki, running_server
from tests.support.trust import TufKeys, person_tokens

CUSTOMER = "fleet-a"


class BasicFetcher(FetcherInterface):
    """python-tuf over urllib, with a station's HTTP Basic credentials (or none)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def _fetch(self, url: str) -> Iterator[bytes]:
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310 (loopback)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 (loopback)
                return iter([r.read()])
        except urllib.error.HTTPError as e:
            raise DownloadHTTPError(f"{url}: HTTP {e.code}", e.code) from e


def _client(api_url: str, root: Path, work: Path, headers: dict[str, str]) -> Updater:
    work.mkdir()
    updater = Updater(
        metadata_dir=str(work),
        metadata_base_url=f"{api_url}/tuf/metadata/",
        target_base_url=f"{api_url}/tuf/targets/",
        target_dir=str(work),
        fetcher=BasicFetcher(headers),
        bootstrap=root.read_bytes(),
    )
    updater.refresh()
    return updater


@pytest.mark.slow  # two releases through the real server and CLI
def test_approvers_sign_a_customer_locked_release_and_the_customers_station_verifies_it(
    tmp_path: Path, pki: Pki
) -> None:
    keys = TufKeys.create(tmp_path / "tuf-keys")
    data = tmp_path / "server-data"
    root_json = tmp_path / "root.json"
    keys.init_cli(data, root_out=root_json)
    locked = pki.bundle(
        tmp_path / "acme-7.3.1.cwb", "7.3.1", 2, release_class="security", customer=CUSTOMER
    )
    public = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    role = tenant_role(CUSTOMER)
    with running_server(tmp_path, pki) as srv:
        tokens = person_tokens(data)
        as_ = acting(data, tokens)

        as_("carol", "release", "upload", str(locked))
        rid = srv.api("GET", "/api/v1/releases")[0]["id"]
        out = as_("alice", "release", "approve", rid, "--key", keys.uri("alice"))
        assert "needs 1 more approval (1 of 2)" in out
        # alice was shown the role file she signed: its customer, release and models
        shown = " ".join(out.split())
        assert f"Tenant role {role} (customer {CUSTOMER}, new role" in shown, out
        assert f"release 7.3.1 for {MODEL}" in shown, out
        assert "approved by alice, bob (2 of 2)" in as_(
            "bob", "release", "approve", rid, "--key", keys.uri("bob")
        )
        assert "targets version 2" in as_("carol", "release", "publish", rid)

        # The next (fleet-wide) release re-signs the tenant role: the CLI fetches the
        # published role with the approver's token and checks it is unchanged.
        as_("carol", "release", "upload", str(public))
        pid = next(r["id"] for r in srv.api("GET", "/api/v1/releases") if r["version"] == "1.1.0")
        for who in ("alice", "bob"):
            out = as_(who, "release", "approve", pid, "--key", keys.uri(who))
            shown = " ".join(out.split())
            assert f"Tenant role {role} (customer {CUSTOMER}, version 1 -> 2" in shown, out
            assert "re-signed, no new release" in shown, out
        assert "targets version 3" in as_("carol", "release", "publish", pid)

        password = srv.add_station("CP-A1")
        # The registry customer comes from factory provisioning; set as it would.
        with contextlib.closing(sqlite3.connect(data / "chargeward.db")) as db, db:
            db.execute("UPDATE stations SET customer = ? WHERE id = 'CP-A1'", (CUSTOMER,))
        assert srv.station("CP-A1")["customer"] == CUSTOMER
        basic = base64.b64encode(f"CP-A1:{password}".encode()).decode()
        mine = _client(srv.api_url, root_json, tmp_path / "a", {"Authorization": f"Basic {basic}"})
        locked_path = tenant_path(CUSTOMER, firmware_target_path(MODEL, "7.3.1", "main"))
        info = mine.get_targetinfo(locked_path)
        assert info is not None and info.custom["customer"] == CUSTOMER
        mine.download_target(info, str(tmp_path / "a" / "7.3.1.cwfw"))
        assert mine.get_targetinfo(firmware_target_path(MODEL, "1.1.0", "main")) is not None

        anonymous = _client(srv.api_url, root_json, tmp_path / "anon", {})
        assert anonymous.get_targetinfo(firmware_target_path(MODEL, "1.1.0", "main")) is not None
        with pytest.raises((DownloadError, RepositoryError)):
            anonymous.get_targetinfo(locked_path)
        for f in (tmp_path / "anon").rglob("*.json"):
            assert CUSTOMER.encode() not in f.read_bytes() and b"7.3.1" not in f.read_bytes()
