"""k-of-n release approval through the real server, and an independent python-tuf client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from tuf.ngclient import Updater

from chargeward.crypto.pki import verify_crl
from chargeward.model.targets import REVOCATION_TARGET, firmware_target_path
from chargeward.release.bundle import read_manifest
from tests.support.fleet import MODEL, Pki, cli, running_server, wait_for
from tests.support.trust import TufKeys, person_tokens


def plain_tuf_client(api_url: str, root_json: Path, work: Path) -> Updater:
    """A plain python-tuf client that knows only ``root_json``, refreshed from the server."""
    metadata_dir = work / "client-metadata"
    metadata_dir.mkdir()
    updater = Updater(
        metadata_dir=str(metadata_dir),
        metadata_base_url=f"{api_url}/tuf/metadata/",
        target_base_url=f"{api_url}/tuf/targets/",
        target_dir=str(work),
        bootstrap=root_json.read_bytes(),
    )
    updater.refresh()
    return updater


def acting(data: Path, tokens: dict[str, str]) -> Callable[..., str]:
    """``as_(who, *args, check=True)``: run the CLI with ``who``'s API token.

    With ``check=False`` the result reads ``"<exit code>:<output>"``.
    """

    def as_(who: str, *args: str, check: bool = True) -> str:
        r = cli(
            *args, "--data-dir", str(data), env={"CHARGEWARD_API_TOKEN": tokens[who]}, check=check
        )
        return r.stdout + r.stderr if check else f"{r.returncode}:{r.stdout}{r.stderr}"

    return as_


@pytest.fixture
def keys(tmp_path: Path) -> TufKeys:
    return TufKeys.create(tmp_path / "tuf-keys")


@pytest.mark.slow  # 76 s beside the suite's other tests on 2 cores
def test_two_of_three_approvers_publish_and_a_plain_tuf_client_downloads(
    tmp_path: Path, pki: Pki, keys: TufKeys
) -> None:
    data = tmp_path / "server-data"
    keys.init_cli(data, root_out=tmp_path / "root.json")
    bundle = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, models=[MODEL, "DC50"])
    with running_server(tmp_path, pki) as srv:
        tokens = person_tokens(data)

        as_ = acting(data, tokens)

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
        updater = plain_tuf_client(srv.api_url, tmp_path / "root.json", tmp_path)
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


@pytest.mark.slow  # 70 s beside the suite's other tests on 2 cores
def test_a_crl_reaches_the_repository_only_through_two_approvals(
    tmp_path: Path, pki: Pki, other_pki: Pki, keys: TufKeys
) -> None:
    data = tmp_path / "server-data"
    keys.init_cli(data, root_out=tmp_path / "root.json")
    now = dt.datetime.now(dt.UTC)
    revoked = pki.signing_cert.serial_number
    crl = tmp_path / "firmware-signing.crl"
    crl.write_bytes(pki.crl([revoked], now=now))
    foreign = tmp_path / "foreign.crl"
    with running_server(tmp_path, pki) as srv:
        tokens = person_tokens(data)

        as_ = acting(data, tokens)

        # A CRL not issued by a trusted Manufacturer Root is refused outright.
        foreign.write_bytes(other_pki.crl([revoked], now=now))
        refused = as_("carol", "repo", "propose-crl", str(foreign), check=False)
        assert refused.startswith("6:") and "422" in refused, refused

        out = as_("carol", "repo", "propose-crl", str(crl))
        number = out.split()[1].rstrip(":")
        assert "needs 2 more approvals" in out
        # An approver holding a different CRL than the one proposed refuses to sign.
        other = tmp_path / "other.crl"
        body = crl.read_bytes()
        other.write_bytes(body[:-1] + bytes([body[-1] ^ 0xFF]))  # last byte changed, always
        refused = as_(
            "alice",
            "repo",
            "approve",
            number,
            "--key",
            keys.uri("alice"),
            "--crl",
            str(other),
            check=False,
        )
        assert refused.startswith("3:") and "other contents" in refused
        as_("alice", "repo", "approve", number, "--key", keys.uri("alice"), "--crl", str(crl))
        refused = as_("carol", "repo", "publish", number, check=False)
        assert refused.startswith("7:") and "needs 1 more approval" in refused
        as_("bob", "repo", "approve", number, "--key", keys.uri("bob"), "--crl", str(crl))
        assert "published" in as_("carol", "repo", "publish", number)

        updater = plain_tuf_client(srv.api_url, tmp_path / "root.json", tmp_path)
        info = updater.get_targetinfo(REVOCATION_TARGET)
        assert info is not None
        got = Path(updater.download_target(info, str(tmp_path / "got.crl"))).read_bytes()
        assert verify_crl(got, [pki.root_cert], now=now).revoked_serials == {revoked}


@pytest.mark.slow  # 82 s beside the suite's other tests on 2 cores
def test_agent_installs_a_published_release_after_both_checks_and_reports_security_releases(
    tmp_path: Path, pki: Pki, keys: TufKeys, factory_bundle: Path
) -> None:
    """The real server's repository, a real agent with TUF on: report, then install."""
    data = tmp_path / "server-data"
    root_json = tmp_path / "root.json"
    keys.init_cli(data, root_out=root_json)
    bundle = pki.bundle(tmp_path / "acme-1.2.0.cwb", "1.2.0", 3, release_class="security")
    with running_server(tmp_path, pki) as srv:
        tokens = person_tokens(data)
        srv.start_agent(
            tmp_path,
            pki,
            "CP-TUF",
            factory_bundle,
            tuf_root=root_json,
            run_args=("--update-check-interval", "1"),
        )
        srv.wait_connected("CP-TUF")
        env = {"CHARGEWARD_API_TOKEN": tokens["carol"]}
        cli("release", "upload", str(bundle), "--data-dir", str(data), env=env)
        rid = srv.api("GET", "/api/v1/releases")[0]["id"]
        for who in ("alice", "bob"):
            cli(
                "release",
                "approve",
                rid,
                "--key",
                keys.uri(who),
                "--data-dir",
                str(data),
                env={"CHARGEWARD_API_TOKEN": tokens[who]},
            )
        cli("release", "publish", rid, "--data-dir", str(data), env=env)

        report = wait_for(
            lambda: srv.station("CP-TUF")["available_update"], 30, "the security-release report"
        )
        assert report["version"] == "1.2.0" and report["security_version"] == 3
        assert report["target"] == firmware_target_path(MODEL, "1.2.0", "main")

        r = srv.api(
            "POST",
            "/api/v1/stations/CP-TUF/firmware-updates",
            json={"release_id": rid, "retry_interval": 1},
        )
        assert r["station_response"] == "Accepted"
        done = wait_for(
            lambda: (d := srv.station("CP-TUF"))["updates"][-1]["outcome"] != "pending" and d,
            60,
            "the update to finish",
        )
        assert done["updates"][-1]["outcome"] == "succeeded", done["firmware_statuses"]
        assert done["firmware_version"] == "1.2.0"
        events = [e["type"] for e in done["security_events"]]
        assert "FirmwareRepositoryCheckFailed" not in events
