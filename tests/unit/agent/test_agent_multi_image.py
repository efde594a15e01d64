"""Multi-image releases on the real agent: the primary over OCPP, the other components over TUF.

A real agent against a small OCPP 2.0.1 CSMS and a TUF repository on 127.0.0.1 (real
websockets, real HTTP, real python-tuf); only the flash is a temporary directory.  Every
refusal leaves the running slot untouched and reports one final status.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.model.targets import TargetCustom, firmware_target_path
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from chargeward.release.image import read_header
from tests.support.agent_harness import (
    L01_HAPPY,
    PASSWORD,
    Csms,
    publish_release,
    running_agent,
    running_csms,
    statuses,
)
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo

METERING = os.urandom(20_000)  # certified metering firmware: the same in every release


@dataclass
class Releases:
    pki: Pki
    factory: Path  # 1.0.0: main + metering
    update: VerifiedBundle  # 1.1.0: main + metering (unchanged payload) + modem
    other: VerifiedBundle  # 1.2.0: the same components, to borrow images from


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    d = tmp_path_factory.mktemp("multi-image")
    pki = Pki.create(d / "pki")

    def release(version: str, sv: int, **components: bytes) -> Path:
        return pki.bundle(d / f"{version}.cwb", version, sv, components=components)

    factory = release("1.0.0", 1, main=b"app 1.0.0" * 999, metering=METERING)
    images = {"main": b"app 1.1.0" * 999, "metering": METERING, "modem": b"modem 7" * 999}
    update = verify_bundle(release("1.1.0", 2, **images), [pki.root_cert], workdir=d / "u")
    more = {**images, "main": b"app 1.2.0" * 999}
    other = verify_bundle(release("1.2.0", 2, **more), [pki.root_cert], workdir=d / "o")
    return Releases(pki, factory, update, other)


def charger(tmp_path: Path, rel: Releases, repo: TufRepo) -> StateDir:
    provision(
        tmp_path / "charger",
        identity=Identity("CP-MI", MODEL, "T", "CP-MI"),
        password=PASSWORD,
        roots_pem=rel.pki.root_pem.read_bytes(),
        factory_bundle=rel.factory,
        tuf_root=repo.root_json(),
    )
    return StateDir(tmp_path / "charger")


def image(bundle: VerifiedBundle, component: str) -> bytes:
    return next(i for i in bundle.images if i.component == component).file.read_bytes()


def relist(repo: TufRepo, rel: Releases, component: str, data: bytes, **changes: object) -> None:
    """List ``data`` as ``component`` of release 1.1.0, with custom fields changed."""
    m = rel.update.manifest
    fields: dict[str, object] = {
        "models": m.hardware_models,
        "version": m.version,
        "security_version": m.security_version,
        "component": component,
        "signature": next(i for i in rel.update.images if i.component == component).signature,
        "components": ("main", "metering", "modem"),
        **changes,
    }
    repo.add_firmware(data, TargetCustom(**fields))  # type: ignore[arg-type]
    repo.publish()


async def install(
    state: StateDir, repo: TufRepo, clock: Clock, location: str, rel: Releases
) -> Csms:
    """Send UpdateFirmware for 1.1.0; returns the CSMS once the update ended."""
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url):
        assert await csms.update_firmware(location, rel.update, clock.now) == "Accepted"
        final = {"Installed", "InvalidSignature", "InstallVerificationFailed", "DownloadFailed"}
        await csms.wait(lambda: final & set(statuses(csms)), "a final status")
        if "Installed" in statuses(csms):
            await csms.wait(lambda: len(csms.of("BootNotification")) == 2, "the new boot")
        if "InvalidSignature" in statuses(csms):  # its security event is sent just after
            await csms.wait(lambda: csms.of("SecurityEventNotification"), "the security event")
        return csms


def assert_untouched(state: StateDir) -> None:
    assert state.boot_control().active == "a" and not state.boot_control().trial
    assert state.slot_info("b") is None
    running = state.slot_info("a")
    assert running is not None and running.version == "1.0.0"
    assert list(state.downloads.iterdir()) == []


def served_as(component: str, data: bytes) -> str:
    """The name the repository serves 1.1.0's ``component`` listed as ``data`` under."""
    directory, _, base = firmware_target_path(MODEL, "1.1.0", component).rpartition("/")
    return f"targets/{directory}/{hashlib.sha256(data).hexdigest()}.{base}"


def targets_fetched(repo: TufRepo, component: str) -> list[str]:
    return [
        r for r in repo.requests if r.startswith("targets/") and r.endswith(component + ".cwfw")
    ]


async def test_whole_release_installs_and_the_pinned_component_is_carried_over(
    tmp_path: Path, rel: Releases, repo: TufRepo, clock: Clock
) -> None:
    state = charger(tmp_path, rel, repo)
    location = publish_release(repo, rel.update)
    csms = await install(state, repo, clock, location, rel)
    assert statuses(csms) == L01_HAPPY
    assert csms.of("BootNotification")[-1]["charging_station"]["firmware_version"] == "1.1.0"
    bc = state.boot_control()
    assert bc.active == "b" and not bc.trial and state.rollback_floor() == 2
    info = state.slot_info("b")
    assert info is not None and info.component == "main"
    assert {c.component for c in info.components} == {"metering", "modem"}
    for c in info.components:  # each image on flash is the release's, byte for byte
        on_flash = state.component_image("b", c.component).read_bytes()
        assert on_flash == image(rel.update, c.component)
        assert c.sha256 == hashlib.sha256(on_flash).hexdigest()
    assert state.slot_image("b").read_bytes() == image(rel.update, "main")
    # The unchanged metering firmware was rebuilt from slot a, not downloaded; the modem was.
    assert targets_fetched(repo, "metering") == []
    assert len(targets_fetched(repo, "modem")) == 1
    header = read_header(state.component_image("b", "metering"))
    assert (header.version, header.payload_length) == ("1.1.0", len(METERING))
    assert list(state.downloads.iterdir()) == []


async def test_component_whose_listed_signature_does_not_verify_is_refused(
    tmp_path: Path, rel: Releases, repo: TufRepo, clock: Clock
) -> None:
    state = charger(tmp_path, rel, repo)
    location = publish_release(repo, rel.update)
    wrong = next(i for i in rel.update.images if i.component == "main").signature
    relist(repo, rel, "modem", image(rel.update, "modem"), signature=wrong)
    csms = await install(state, repo, clock, location, rel)
    assert statuses(csms) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert [e["type"] for e in csms.of("SecurityEventNotification")] == ["InvalidFirmwareSignature"]
    assert_untouched(state)


@pytest.mark.parametrize("borrowed", ["version", "component"])
async def test_component_whose_signed_header_names_another_release_or_component_is_refused(
    tmp_path: Path, rel: Releases, repo: TufRepo, clock: Clock, borrowed: str
) -> None:
    state = charger(tmp_path, rel, repo)
    location = publish_release(repo, rel.update)
    # A correctly signed image of the wrong thing, listed as 1.1.0's modem with its own
    # (valid) signature: 1.2.0's modem, or 1.1.0's metering image.
    source, component = (rel.other, "modem") if borrowed == "version" else (rel.update, "metering")
    signature = next(i for i in source.images if i.component == component).signature
    relist(repo, rel, "modem", image(source, component), signature=signature)
    csms = await install(state, repo, clock, location, rel)
    assert statuses(csms) == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallVerificationFailed",
    ]
    assert_untouched(state)


@pytest.mark.parametrize("fault", ["not-listed", "hash"])
async def test_component_missing_from_the_repository_or_tampered_on_the_way_is_refused(
    tmp_path: Path, rel: Releases, repo: TufRepo, clock: Clock, fault: str
) -> None:
    state = charger(tmp_path, rel, repo)
    location = publish_release(repo, rel.update)
    modem = image(rel.update, "modem")
    if fault == "not-listed":
        repo.remove_target(firmware_target_path(MODEL, "1.1.0", "modem"))
        repo.publish()
    else:  # the download is altered: same length, one bit flipped
        repo.serve(served_as("modem", modem), modem[:-1] + bytes([modem[-1] ^ 1]))
    csms = await install(state, repo, clock, location, rel)
    assert statuses(csms) == ["Downloading", "Downloaded", "InvalidSignature"]
    events = csms.security_events()
    assert [e["type"] for e in events] == ["FirmwareRepositoryCheckFailed"]
    assert events[0]["tech_info"].startswith(f"{fault}: ")
    fetched = [] if fault == "not-listed" else [served_as("modem", modem)]
    assert targets_fetched(repo, "modem") == fetched
    assert_untouched(state)


async def test_unreachable_component_download_fails_the_download(
    tmp_path: Path, rel: Releases, repo: TufRepo, clock: Clock
) -> None:
    state = charger(tmp_path, rel, repo)
    location = publish_release(repo, rel.update)
    repo.serve(served_as("modem", image(rel.update, "modem")), None)
    csms = await install(state, repo, clock, location, rel)
    assert statuses(csms) == ["Downloading", "Downloaded", "DownloadFailed"]
    assert_untouched(state)
