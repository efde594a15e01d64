"""k-of-n release approval through the real server, and an independent python-tuf client."""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.ngclient import Updater

from chargeward.model.targets import firmware_target_path
from chargeward.release.bundle import read_manifest
from tests.support.fleet import MODEL, Pki, cli, running_server
from tests.support.trust import TufKeys


def _token(out: str) -> str:
    return out.strip().rsplit(" ", 1)[-1]


@pytest.fixture
def keys(tmp_path: Path) -> TufKeys:
    return TufKeys.create(tmp_path / "tuf-keys")


def test_two_of_three_approvers_publish_and_a_plain_tuf_client_downloads(
    tmp_path: Path, pki: Pki, keys: TufKeys
) -> None:
    data = tmp_path / "server-data"
    keys.init_cli(data, root_out=tmp_path / "root.json")
    bundle = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, models=[MODEL, "DC50"])
    with running_server(tmp_path, pki) as srv:
        tokens = {
            n: _token(cli("token", "create", n, "--data-dir", str(data)).stdout)
            for n in ("alice", "bob", "carol")
        }

        def as_(who: str, *args: str, check: bool = True) -> str:
            r = cli(
                *args,
                "--data-dir",
                str(data),
                env={"CHARGEWARD_API_TOKEN": tokens[who]},
                check=check,
            )
            return r.stdout + r.stderr if check else f"{r.returncode}:{r.stdout}{r.stderr}"

        out = as_("carol", "release", "upload", str(bundle))
        assert "pending" in out
        rid = srv.api("GET", "/api/v1/releases")[0]["id"]

        # Dispatching an unpublished release is refused.
        with srv.http as c:
            r = c.post("/api/v1/stations/none/firmware-updates", json={"release_id": rid})
        assert r.status_code in (404, 409)

        # The uploader cannot approve her own release, even with a valid approver key.
        refused = as_("carol", "release", "approve", rid, "--key", keys.uri("carol"), check=False)
        assert refused.startswith("7:") and "carol uploaded this release" in refused
        # Nor can another person submit carol's signature for her.
        refused = as_("alice", "release", "approve", rid, "--key", keys.uri("carol"), check=False)
        assert refused.startswith("7:") and "cannot approve" in refused

        refused = as_("alice", "release", "publish", rid, check=False)
        assert refused.startswith("7:") and "needs 2 more approvals (0 of 2)" in refused

        assert "needs 1 more approval (1 of 2)" in as_(
            "alice", "release", "approve", rid, "--key", keys.uri("alice")
        )
        # The same person twice counts once.
        assert "needs 1 more approval (1 of 2)" in as_(
            "alice", "release", "approve", rid, "--key", keys.uri("alice")
        )
        refused = as_("alice", "release", "publish", rid, check=False)
        assert refused.startswith("7:") and "needs 1 more approval (1 of 2)" in refused

        assert "approved by alice, bob (2 of 2)" in as_(
            "bob", "release", "approve", rid, "--key", keys.uri("bob")
        )
        assert "targets version 2" in as_("carol", "release", "publish", rid)
        assert srv.api("GET", f"/api/v1/releases/{rid}")["state"] == "published"

        # An independent check: a plain python-tuf client with only the published root.
        metadata_dir = tmp_path / "client-metadata"
        metadata_dir.mkdir()
        updater = Updater(
            metadata_dir=str(metadata_dir),
            metadata_base_url=f"{srv.api_url}/tuf/metadata/",
            target_base_url=f"{srv.api_url}/tuf/targets/",
            target_dir=str(tmp_path),
            bootstrap=(tmp_path / "root.json").read_bytes(),
        )
        updater.refresh()
        manifest = read_manifest(bundle)
        for model in (MODEL, "DC50"):
            info = updater.get_targetinfo(firmware_target_path(model, "1.1.0", "main"))
            assert info is not None
            assert info.custom["security_version"] == 2
            assert info.custom["models"] == ["AC22", "DC50"]
            path = updater.download_target(info, str(tmp_path / f"{model}.cwfw"))
            assert Path(path).stat().st_size == manifest.images[0].length

        audit = srv.api("GET", "/api/v1/audit", params={"limit": 200})
        actions = [e["action"] for e in audit]
        assert "release.published" in actions and actions.count("release.approved") == 3
