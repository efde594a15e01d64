"""Attacks by a malicious TUF repository, refused end to end by a real agent process.

The real server (whose own TUF repository is not initialised, so it dispatches any uploaded
release) sends a properly OCPP-signed release to a real agent provisioned with the root of a
simulated repository (:class:`tests.support.tufrepo.TufRepo` on loopback).  The simulator then
plays the attacker of the TUF threat model: it does not list the image, lists it under a
threshold or with a revoked key, lists other bytes, rolls metadata back, freezes, mixes and
matches, sends endless data, or lists the image for another model or customer.  In every case
the server sees ``InvalidSignature`` and a ``FirmwareRepositoryCheckFailed`` security event
whose tech info starts with the reason code, and the charger keeps running 1.0.0 from a slot
whose bytes have not changed.  A control case lists the image correctly and installs it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import TargetFile

from chargeward.agent.state import StateDir
from chargeward.agent.tuf_client import RepositoryLimits
from chargeward.local import Process
from chargeward.model.targets import TargetCustom, firmware_target_path
from chargeward.release.bundle import verify_bundle
from tests.support.fleet import MODEL, Pki, Server, assert_no_crash, running_server, wait_for
from tests.support.tufrepo import TufRepo

CUSTOMER = "fleet-a"
_versions = itertools.count(1)


@dataclass
class Release:
    """One uploaded release and the image bytes a repository would list for it."""

    id: str
    version: str
    security_version: int
    image: bytes

    def custom(self, **fields: Any) -> TargetCustom:
        return TargetCustom((MODEL,), self.version, self.security_version, "main", **fields)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("repository-attacks")
    with running_server(root, pki) as srv:
        yield srv, root
        for agent in srv.agents:
            assert_no_crash(agent.stop())
    assert_no_crash(srv.proc.output())


@pytest.fixture
def repo() -> Iterator[TufRepo]:
    with TufRepo() as r:
        yield r


def _release(srv: Server, root: Path, pki: Pki, security_version: int = 2) -> Release:
    """Upload a fresh OCPP-signed release (a new version per case: one server per module)."""
    n = next(_versions)
    version = f"1.{n}.0" if security_version else f"0.{n}.0"
    bundle = pki.bundle(root / f"u-{version}.cwb", version, security_version)
    image = verify_bundle(bundle, [pki.root_cert], workdir=root / f"x-{version}").images[0]
    uploaded = srv.upload(bundle)
    return Release(uploaded["id"], version, security_version, image.file.read_bytes())


def _start_agent(
    srv: Server,
    root: Path,
    pki: Pki,
    factory: Path,
    repo: TufRepo,
    station_id: str,
    customer: str | None,
) -> tuple[Process, StateDir]:
    """Provision a charger with the simulator's root (``--tuf-root``) and run it against it."""
    tuf_root = root / f"{station_id}-root.json"
    tuf_root.write_bytes(repo.root_json())
    proc, state = srv.start_agent(
        root, pki, station_id, factory, tuf_root=tuf_root, repository=repo.url, customer=customer
    )
    return proc, StateDir(state)


def _active_image_sha256(state: StateDir) -> str:
    return hashlib.sha256(state.slot_image(state.boot_control().active).read_bytes()).hexdigest()


# -- what the repository does (after the charger's first refresh) ---------------------------


def _list(repo: TufRepo, rel: Release, **fields: Any) -> None:
    repo.add_firmware(rel.image, rel.custom(**fields))
    repo.publish()


def control(repo: TufRepo, rel: Release) -> None:
    _list(repo, rel)


def arbitrary_software(repo: TufRepo, rel: Release) -> None:
    # A correctly signed repository that lists other firmware, never this image.
    repo.add_firmware(b"some other image", TargetCustom((MODEL,), "9.9.9", 9, "main"))
    repo.publish()


def under_threshold(repo: TufRepo, rel: Release) -> None:
    repo.add_firmware(rel.image, rel.custom())
    repo.publish(targets_signers=repo.keys["targets"][:1])


def revoked_key(repo: TufRepo, rel: Release) -> None:
    revoked = repo.keys["targets"][0]
    repo.rotate_root(revoke_targets_key=0)
    repo.add_firmware(rel.image, rel.custom())
    repo.publish(targets_signers=[revoked, repo.keys["targets"][0]])


def tampered_bytes(repo: TufRepo, rel: Release) -> None:
    other = bytearray(rel.image)
    other[len(other) // 2] ^= 0xFF  # same length, another hash
    repo.add_firmware(bytes(other), rel.custom())
    repo.publish()


def metadata_rollback(repo: TufRepo, rel: Release) -> None:
    # The charger's first refresh saw targets 2; the online keys list targets 1 again.
    repo.publish(list_targets_version=repo.targets.signed.version - 1)


def freeze(repo: TufRepo, rel: Release) -> None:
    _list(repo, rel)
    repo.publish_timestamp(expires_in=-dt.timedelta(hours=1))


def mix_and_match(repo: TufRepo, rel: Release) -> None:
    old = repo.history["snapshot"][repo.snapshot.signed.version]
    _list(repo, rel)
    repo.serve(f"metadata/{repo.snapshot.signed.version}.snapshot.json", old)


def endless_data(repo: TufRepo, rel: Release) -> None:
    _list(repo, rel)
    ts = repo.files["metadata/timestamp.json"]
    repo.serve("metadata/timestamp.json", ts + b" " * RepositoryLimits().max_download)


def wrong_model(repo: TufRepo, rel: Release) -> None:
    # The charger's own path, but the signed custom fields name another model.
    path = firmware_target_path(MODEL, rel.version, "main")
    tf = TargetFile.from_data(path, rel.image, ["sha256"])
    custom = TargetCustom(("DC50",), rel.version, rel.security_version, "main")
    tf.unrecognized_fields["custom"] = custom.to_dict()
    repo.targets.signed.targets[path] = tf
    repo.serve(f"targets/firmware/{MODEL}/{rel.version}/{tf.hashes['sha256']}.main.cwfw", rel.image)
    repo.publish()


def wrong_customer(repo: TufRepo, rel: Release) -> None:
    _list(repo, rel, customer="fleet-b")


@dataclass(frozen=True)
class Attack:
    name: str
    act: Callable[[TufRepo, Release], None]
    reason: str | None  # None: the update succeeds
    customer: str | None = None
    security_version: int = 2
    prepublish: bool = False  # a second targets version before the charger's first refresh


ATTACKS = [
    Attack("control", control, None),
    Attack("arbitrary-software", arbitrary_software, "not-listed"),
    Attack("under-threshold", under_threshold, "unsigned"),
    Attack("revoked-key", revoked_key, "unsigned"),
    Attack("tampered-bytes", tampered_bytes, "hash"),
    Attack("metadata-rollback", metadata_rollback, "rollback", prepublish=True),
    Attack("freeze", freeze, "expired"),
    Attack("mix-and-match", mix_and_match, "rollback"),
    Attack("endless-data", endless_data, "oversized"),
    Attack("wrong-model", wrong_model, "wrong-model"),
    Attack("wrong-customer", wrong_customer, "wrong-customer", customer=CUSTOMER),
]


@pytest.mark.slow  # 10 attacks, each a server, an agent and a TUF repository: ~3 min of CPU
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_repository_attack_refused(
    fleet: tuple[Server, Path], pki: Pki, factory_bundle: Path, repo: TufRepo, attack: Attack
) -> None:
    srv, root = fleet
    station = f"CP-TUF-{attack.name}"[:25]
    rel = _release(srv, root, pki, attack.security_version)
    if attack.prepublish:
        repo.add_firmware(b"an earlier image", TargetCustom((MODEL,), "0.0.1", 1, "main"))
        repo.publish()
    agent, state, detail, statuses = _dispatch(
        srv, root, pki, factory_bundle, repo, station, rel, attack
    )
    events = detail["security_events"]
    if attack.reason is None:
        assert statuses[-1] == "Installed", statuses
        assert detail["updates"][-1]["outcome"] == "succeeded"
        assert detail["firmware_version"] == rel.version
        assert not [e for e in events if e["type"] == "FirmwareRepositoryCheckFailed"]
        assert state.boot_control().active == "b"
    else:
        assert detail["updates"][-1]["outcome"] == "failed"
        assert statuses == ["Downloading", "Downloaded", "InvalidSignature"], statuses
        refusals = [e for e in events if e["type"] == "FirmwareRepositoryCheckFailed"]
        assert len(refusals) == 1, events
        assert refusals[0]["tech_info"].startswith(f"{attack.reason}: "), refusals
    assert_no_crash(agent.stop())


def test_firmware_downgrade_refused(
    fleet: tuple[Server, Path], pki: Pki, factory_bundle: Path, repo: TufRepo
) -> None:
    """A signed, correctly listed image below the rollback floor is never installed."""
    srv, root = fleet
    rel = _release(srv, root, pki, security_version=0)
    attack = Attack("downgrade", control, "rollback", security_version=0)
    agent, _, detail, statuses = _dispatch(
        srv, root, pki, factory_bundle, repo, "CP-TUF-downgrade", rel, attack
    )
    assert detail["updates"][-1]["outcome"] == "failed"
    assert statuses == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "InstallVerificationFailed",
    ]
    assert [e["type"] for e in detail["security_events"]] == ["FirmwareRollbackRefused"]
    assert_no_crash(agent.stop())


def _dispatch(
    srv: Server,
    root: Path,
    pki: Pki,
    factory: Path,
    repo: TufRepo,
    station: str,
    rel: Release,
    attack: Attack,
) -> tuple[Process, StateDir, dict[str, Any], list[str]]:
    """Start the charger, let it refresh once, attack, dispatch; returns the final station view.

    Asserts on the way that nothing changed on a refused update.
    """
    agent, state = _start_agent(srv, root, pki, factory, repo, station, attack.customer)
    assert srv.wait_connected(station)["firmware_version"] == "1.0.0"
    targets = f"metadata/{repo.targets.signed.version}.targets.json"
    wait_for(lambda: targets in repo.requests, 30, "the charger's first repository refresh")
    wait_for(lambda: state.time_floor() is not None, 30, "the refresh to be stored")
    assert srv.station(station)["security_events"] == []
    before = _active_image_sha256(state)

    attack.act(repo, rel)
    r = srv.api(
        "POST",
        f"/api/v1/stations/{station}/firmware-updates",
        json={"release_id": rel.id, "retry_interval": 1},
    )
    assert r["station_response"] == "Accepted"
    detail = wait_for(
        lambda: (
            (d := srv.station(station))["updates"]
            and d["updates"][-1]["outcome"] != "pending"
            and d["security_events" if attack.reason else "connected"]
            and d
        ),
        60,
        f"{attack.name} to finish",
    )
    statuses = [
        e["status"] for e in detail["firmware_statuses"] if e["request_id"] == r["request_id"]
    ]
    if attack.reason is not None:
        assert detail["firmware_version"] == "1.0.0"
        assert state.boot_control().active == "a" and state.slot_info("b") is None
        assert _active_image_sha256(state) == before
        assert list(state.downloads.iterdir()) == []
    return agent, state, detail, statuses
