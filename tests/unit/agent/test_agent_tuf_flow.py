"""The real agent, with TUF enforced, against a small OCPP 2.0.1 CSMS and a TUF repository.

Everything runs in this process on 127.0.0.1: real websockets and OCPP frames, real HTTP
downloads, real python-tuf.  Only the flash is a temporary directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.errors import ConfigError
from chargeward.model.targets import TargetCustom
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import (
    L01_HAPPY,
    make_charger,
    publish_update,
    running_agent,
    running_csms,
    statuses,
)
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo


@pytest.fixture(scope="module")
def fw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path, VerifiedBundle]:
    d = tmp_path_factory.mktemp("tuf-flow")
    pki = Pki.create(d / "pki")
    factory = pki.bundle(d / "factory.cwb", "1.0.0", 1)
    update = verify_bundle(pki.bundle(d / "u.cwb", "1.1.0", 2), [pki.root_cert], workdir=d / "x")
    return pki, factory, update


async def test_listed_update_installs_and_security_release_is_reported_once(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer="fleet-a")
    location = publish_update(repo, fw[2], customer="fleet-a")
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url) as agent:
        reported = await csms.wait(lambda: csms.of("DataTransfer"), "SecurityUpdateAvailable")
        assert reported[0]["vendor_id"] == "org.chargeward"
        assert reported[0]["message_id"] == "SecurityUpdateAvailable"
        assert json.loads(reported[0]["data"]) == {
            "target": f"firmware/{MODEL}/1.1.0/main.cwfw",
            "version": "1.1.0",
            "security_version": 2,
        }
        assert [u.version for u in await agent.check_for_security_updates()] == ["1.1.0"]
        assert len(csms.of("DataTransfer")) == 1  # reported once

        assert await csms.update_firmware(location, fw[2], clock.now) == "Accepted"
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert statuses(csms) == L01_HAPPY
    assert state.boot_control().active == "b" and state.rollback_floor() == 2
    assert len(csms.of("DataTransfer")) == 1
    assert state.time_floor() is not None
    assert not [e for e in csms.security_events() if "Repository" in e["type"]]


async def test_periodic_check_reports_each_new_security_release(
    tmp_path: Path,
    fw: tuple[Pki, Path, VerifiedBundle],
    repo: TufRepo,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    publish_update(repo, fw[2])
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url, 0.05):
        await csms.wait(lambda: csms.of("DataTransfer"), "the first report")
        repo.add_firmware(b"feature", TargetCustom((MODEL,), "1.2.0", 3, "main", "feature"))
        repo.add_firmware(b"fix", TargetCustom((MODEL,), "1.2.1", 3, "main", "security"))
        repo.publish()
        await csms.wait(lambda: len(csms.of("DataTransfer")) == 2, "the second report")
        # Each check starts by fetching timestamp.json, one after the other: the third fetch
        # from here means two more checks have run to their end.  Nothing is reported twice.
        checks = repo.requests.count("metadata/timestamp.json")
        await csms.wait(
            lambda: repo.requests.count("metadata/timestamp.json") >= checks + 3, "more checks"
        )
    reports = [json.loads(d["data"])["version"] for d in csms.of("DataTransfer")]
    assert reports == ["1.1.0", "1.2.1"]
    assert state.reported_updates() == {
        f"firmware/{MODEL}/1.1.0/main.cwfw",
        f"firmware/{MODEL}/1.2.1/main.cwfw",
    }
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


async def test_update_for_another_customer_refused_with_security_event(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer="fleet-a")
    location = publish_update(repo, fw[2], customer="fleet-b")
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url):
        assert await csms.update_firmware(location, fw[2], clock.now) == "Accepted"
        await csms.wait(lambda: "InvalidSignature" in statuses(csms), "InvalidSignature")
        events = await csms.wait(
            lambda: [
                e for e in csms.security_events() if e["type"] == "FirmwareRepositoryCheckFailed"
            ],
            "FirmwareRepositoryCheckFailed",
        )
    assert statuses(csms) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert events[0]["tech_info"].startswith("wrong-customer: ")
    assert csms.of("DataTransfer") == []  # not a release for this charger
    assert list(state.downloads.iterdir()) == []
    assert state.boot_control().active == "a" and state.slot_info("b") is None


async def test_unreachable_repository_fails_the_download(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    location = publish_update(repo, fw[2])
    with TufRepo(clock) as gone:
        dead = gone.url
    async with running_csms() as csms, running_agent(state, csms, clock, dead):
        assert await csms.update_firmware(location, fw[2], clock.now) == "Accepted"
        await csms.wait(lambda: "DownloadFailed" in statuses(csms), "DownloadFailed")
    assert statuses(csms) == ["Downloading", "Downloaded", "DownloadFailed"]
    assert csms.of("SecurityEventNotification") == []
    assert state.slot_info("b") is None


async def test_failed_update_check_reported_as_security_event(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    publish_update(repo, fw[2])
    repo.publish(targets_signers=repo.keys["targets"][:1])  # under threshold
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url):
        events = await csms.wait(lambda: csms.security_events(), "FirmwareRepositoryCheckFailed")
    assert events[0]["type"] == "FirmwareRepositoryCheckFailed"
    assert events[0]["tech_info"].startswith("unsigned: ")
    assert csms.of("DataTransfer") == []


def test_tuf_root_without_repository_url_is_a_config_error(
    tmp_path: Path, fw: tuple[Pki, Path, VerifiedBundle], repo: TufRepo
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    with pytest.raises(ConfigError, match="CHARGEWARD_REPOSITORY_URL"):
        Agent(AgentConfig(state_dir=state.root, csms_url="ws://127.0.0.1:9/ocpp/"))
