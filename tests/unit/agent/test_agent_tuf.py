"""The charger's TUF client against a real python-tuf repository on loopback HTTP.

Each attack on the repository is refused with its reason code; the happy path, root and key
rotations and restarts keep working; the time floor refuses a clock set back and only rises.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import MetaFile

from chargeward.agent.state import StateDir
from chargeward.agent.tuf_client import RepositoryClient, RepositoryLimits
from chargeward.errors import ConfigError, RepositoryRefused, TransportError
from chargeward.model.targets import TargetCustom
from tests.support.tufrepo import Clock, TufRepo

MODEL = "AC22"
IMAGE = b"signed firmware image 1.1.0\n" * 100
PATH = f"firmware/{MODEL}/1.1.0/main.cwfw"
LIMITS = RepositoryLimits(connect_timeout=2.0, read_timeout=2.0, download_timeout=5.0)


@pytest.fixture
def repo(clock: Clock) -> Iterator[TufRepo]:
    with TufRepo(clock) as r:
        r.add_firmware(IMAGE, TargetCustom((MODEL,), "1.1.0", 2, "main", "security"))
        r.publish()
        yield r


@pytest.fixture
def state(tmp_path: Path, repo: TufRepo) -> StateDir:
    st = StateDir(tmp_path / "charger")
    st.set_tuf_bootstrap_root(repo.root_json(1))
    return st


def client(state: StateDir, repo: TufRepo, clock: Clock) -> RepositoryClient:
    """A new client (and so a new ``Updater``) each time, as after a restart."""
    return RepositoryClient(state, repo.url, limits=LIMITS, clock=clock)


def refused(state: StateDir, repo: TufRepo, clock: Clock) -> RepositoryRefused:
    with pytest.raises(RepositoryRefused) as info:
        client(state, repo, clock).target(PATH)
    return info.value


def test_happy_path_lists_the_firmware(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    info = client(state, repo, clock).target(PATH)
    assert info is not None and info.length == len(IMAGE)
    assert info.custom["security_version"] == 2
    assert client(state, repo, clock).target(f"firmware/{MODEL}/9.9.9/main.cwfw") is None


def test_unreachable_repository_is_a_transport_error(state: StateDir, clock: Clock) -> None:
    with TufRepo(clock) as gone:
        url = gone.url
    with pytest.raises(TransportError):
        RepositoryClient(state, url, limits=LIMITS, clock=clock).target(PATH)
    assert state.time_floor() is None


def test_missing_timestamp_is_a_transport_error(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    repo.serve("metadata/timestamp.json", None)
    with pytest.raises(TransportError):
        client(state, repo, clock).target(PATH)


def test_stalled_repository_times_out_as_a_transport_error(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    repo.delays["metadata/timestamp.json"] = 2.0
    quick = RepositoryLimits(connect_timeout=0.5, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransportError):
        RepositoryClient(state, repo.url, limits=quick, clock=clock).target(PATH)
    assert time.monotonic() - started < 1.5


def test_rollback_of_timestamp_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    old = repo.history["timestamp"][repo.timestamp_version]
    repo.publish()
    assert client(state, repo, clock).target(PATH) is not None
    repo.serve("metadata/timestamp.json", old)
    assert refused(state, repo, clock).reason == "rollback"


def test_rollback_of_targets_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    assert client(state, repo, clock).target(PATH) is not None
    old_targets = repo.targets.signed.version - 1
    repo.publish(list_targets_version=old_targets)  # online keys list an older targets
    assert refused(state, repo, clock).reason == "rollback"


def test_freeze_refused_when_the_clock_passes_expiry(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    assert client(state, repo, clock).target(PATH) is not None
    clock.advance(days=2)  # the repository stopped re-signing its timestamp
    err = refused(state, repo, clock)
    assert err.reason == "expired" and "timestamp" in str(err)


def test_expired_timestamp_served_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    repo.publish_timestamp(expires_in=-dt.timedelta(hours=1))
    assert refused(state, repo, clock).reason == "expired"


@pytest.mark.parametrize("meta_hashes", [False, True])
def test_mix_and_match_refused(tmp_path: Path, clock: Clock, meta_hashes: bool) -> None:
    with TufRepo(clock, meta_hashes=meta_hashes) as repo:
        repo.add_firmware(IMAGE, TargetCustom((MODEL,), "1.1.0", 2, "main"))
        repo.publish()
        state = StateDir(tmp_path / "charger")
        state.set_tuf_bootstrap_root(repo.root_json())
        assert client(state, repo, clock).target(PATH) is not None
        old = repo.history["snapshot"][repo.snapshot.signed.version]
        repo.publish()
        new_version = repo.snapshot.signed.version
        repo.serve(f"metadata/{new_version}.snapshot.json", old)  # new timestamp, old snapshot
        assert refused(state, repo, clock).reason == _mix_and_match_reason(
            meta_hashes, len(old), len(repo.history["snapshot"][new_version])
        )


def _mix_and_match_reason(meta_hashes: bool, served: int, listed: int) -> str:
    """The timestamp pins the snapshot version, and with hashes its length and hash too.

    ECDSA signatures vary in length, so the old snapshot may be shorter (``length``), longer
    (the download stops at the listed length: ``oversized``) or as long (``hash``).
    """
    if not meta_hashes:
        return "rollback"
    if served == listed:
        return "hash"
    return "oversized" if served > listed else "length"


def test_targets_under_threshold_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    repo.publish(targets_signers=repo.keys["targets"][:1])
    err = refused(state, repo, clock)
    assert err.reason == "unsigned" and "1/2" in str(err)


def test_targets_signed_with_a_revoked_key_refused(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    revoked = repo.keys["targets"][0]
    repo.rotate_root(revoke_targets_key=0)
    repo.publish(targets_signers=[revoked, repo.keys["targets"][0]])
    assert refused(state, repo, clock).reason == "unsigned"
    repo.publish()  # a threshold of current keys
    assert client(state, repo, clock).target(PATH) is not None


def test_tampered_metadata_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    name = f"metadata/{repo.targets.signed.version}.targets.json"
    doc = json.loads(repo.files[name])
    doc["signed"]["targets"][PATH]["length"] += 1
    repo.serve(name, json.dumps(doc).encode())
    assert refused(state, repo, clock).reason == "unsigned"


def test_oversized_metadata_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    ts = repo.files["metadata/timestamp.json"]
    repo.serve("metadata/timestamp.json", ts + b" " * LIMITS.timestamp_max_length)
    assert refused(state, repo, clock).reason == "oversized"


def test_oversized_snapshot_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    small = RepositoryLimits(snapshot_max_length=2000)
    name = f"metadata/{repo.snapshot.signed.version}.snapshot.json"
    repo.serve(name, repo.files[name] + b" " * 5000)
    with pytest.raises(RepositoryRefused) as info:
        RepositoryClient(state, repo.url, limits=small, clock=clock).target(PATH)
    assert info.value.reason == "oversized"


def test_endless_snapshot_stops_at_the_hard_cap(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    version = repo.snapshot.signed.version
    repo.publish_timestamp(snapshot_meta=MetaFile(version, length=10**9))  # signed, huge
    repo.serve(f"metadata/{version}.snapshot.json", b" " * (LIMITS.max_download + 1))
    assert refused(state, repo, clock).reason == "oversized"


def test_root_rotation_keeps_the_charger_working(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    assert client(state, repo, clock).target(PATH) is not None
    assert repo.rotate_root(new_root_keys=True) == 2  # 2 of the old + 2 of the new keys
    repo.add_firmware(IMAGE + b"2", TargetCustom((MODEL,), "1.2.0", 3, "main", "security"))
    repo.publish()
    assert client(state, repo, clock).target(f"firmware/{MODEL}/1.2.0/main.cwfw") is not None
    assert (state.tuf_metadata_dir / "root_history" / "2.root.json").exists()
    assert repo.rotate_root() == 3  # signed by the new root keys only
    repo.publish()
    assert client(state, repo, clock).target(PATH) is not None


def test_cached_rotated_root_wins_over_the_bootstrap(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    old_timestamp_key = repo.keys["timestamp"][0]
    repo.rotate_root(new_timestamp_key=True)
    repo.publish()
    assert client(state, repo, clock).target(PATH) is not None
    repo.serve("metadata/2.root.json", None)  # the charger keeps root 2 in its own cache
    repo.publish_timestamp(signer=old_timestamp_key)  # valid only under the factory root
    err = refused(state, repo, clock)
    assert err.reason == "unsigned" and "timestamp" in str(err)


def test_fast_forward_attack_recovered_by_rotating_the_timestamp_key(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    assert client(state, repo, clock).target(PATH) is not None
    repo.publish_timestamp(version=1000)  # stolen timestamp key
    assert client(state, repo, clock).target(PATH) is not None
    repo.publish_timestamp()  # the legitimate repository goes on at its own version
    assert refused(state, repo, clock).reason == "rollback"
    repo.rotate_root(new_timestamp_key=True)
    repo.publish_timestamp()
    assert client(state, repo, clock).target(PATH) is not None


def test_clock_behind_the_floor_refused_before_any_download(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    assert client(state, repo, clock).target(PATH) is not None
    assert state.time_floor() == clock.now
    clock.advance(days=-1)
    before = len(repo.requests)
    assert refused(state, repo, clock).reason == "clock-behind"
    assert len(repo.requests) == before
    clock.advance(days=1, seconds=30)
    assert client(state, repo, clock).target(PATH) is not None


def test_time_floor_only_rises(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    client(state, repo, clock).target(PATH)
    first = state.time_floor()
    assert first == clock.now
    clock.advance(hours=1)
    repo.publish_timestamp(issued=clock.now - dt.timedelta(hours=2))  # older than the floor
    client(state, repo, clock).target(PATH)
    assert state.time_floor() == first
    repo.publish_timestamp()
    client(state, repo, clock).target(PATH)
    assert state.time_floor() == clock.now > first
    assert state.raise_time_floor(first) == clock.now


def test_far_future_issued_time_refused_without_raising_the_floor(
    state: StateDir, repo: TufRepo, clock: Clock
) -> None:
    client(state, repo, clock).target(PATH)
    floor = state.time_floor()
    repo.publish_timestamp(issued=clock.now + dt.timedelta(days=3650))
    assert refused(state, repo, clock).reason == "clock-behind"
    assert state.time_floor() == floor


def test_metadata_and_floor_survive_a_restart(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    old = repo.history["timestamp"][repo.timestamp_version]
    repo.publish()
    client(state, repo, clock).target(PATH)
    floor = state.time_floor()
    restarted = StateDir(state.root)
    repo.serve("metadata/timestamp.json", old)  # rollback protection comes from the cache
    assert refused(restarted, repo, clock).reason == "rollback"
    assert restarted.time_floor() == floor


def test_missing_issued_field_refused(state: StateDir, repo: TufRepo, clock: Clock) -> None:
    del repo.timestamp.signed.unrecognized_fields["x-chargeward-issued"]
    repo.timestamp_version += 1
    repo.timestamp.signed.version = repo.timestamp_version
    repo.timestamp.signatures.clear()
    repo.timestamp.sign(repo.keys["timestamp"][0])
    repo.serve("metadata/timestamp.json", repo.timestamp.to_bytes())
    assert refused(state, repo, clock).reason == "repository"


def test_listing_follows_the_model_delegation(tmp_path: Path, clock: Clock) -> None:
    with TufRepo(clock) as repo:
        repo.delegate_model(MODEL)
        repo.add_firmware(IMAGE, TargetCustom((MODEL,), "1.1.0", 2, "main", "security"))
        repo.add_firmware(b"other", TargetCustom(("DC50",), "7.0.0", 9, "main", "security"))
        repo.publish()
        state = StateDir(tmp_path / "charger")
        state.set_tuf_bootstrap_root(repo.root_json())
        listed = client(state, repo, clock).firmware_targets(MODEL)
        assert list(listed) == [PATH]
        repo.add_firmware(IMAGE + b"3", TargetCustom((MODEL,), "1.3.0", 4, "main", "security"))
        repo.publish()
        listed = client(state, repo, clock).firmware_targets(MODEL)
        assert sorted(listed) == [PATH, f"firmware/{MODEL}/1.3.0/main.cwfw"]


def test_bootstrap_root_must_be_tuf_root_metadata(tmp_path: Path, repo: TufRepo) -> None:
    state = StateDir(tmp_path / "charger")
    for bad in (b"{}", b"not json", repo.history["timestamp"][1]):
        with pytest.raises(ConfigError, match="TUF root"):
            state.set_tuf_bootstrap_root(bad)
    assert state.tuf_bootstrap_root() is None


def test_repository_url_must_be_http(state: StateDir) -> None:
    with pytest.raises(ConfigError, match="http"):
        RepositoryClient(state, "ftp://127.0.0.1/tuf/")
