"""The TUF image repository: thresholds, publish order, online renewal, rotation, expiry."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from securesystemslib.signer import Signature
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from chargeward.crypto import generate_key
from chargeward.errors import BadSignature, ConfigError, Conflict, TrustError
from chargeward.model.targets import TargetCustom
from chargeward.publish import ExpiryPolicy, ImageRepository, OnlineSigners
from chargeward.publish.roles import RootChange, RootPlan, empty_targets, new_root, next_root
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.trust.approval import (
    Approval,
    approval_status,
    check_approval,
    label_accounts,
    signed_proposal,
)
from chargeward.trust.review import review_proposal
from chargeward.trust.tuf_keys import TufSigner, tuf_key
from tests.support.softhsm import use_softhsm
from tests.support.trust import TufKeys

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
SIG = base64.b64encode(b"signature of main").decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TufKeys:
    return TufKeys.create(tmp_path_factory.mktemp("tuf-keys"))


@pytest.fixture
def repo(tmp_path: Path, keys: TufKeys) -> ImageRepository:
    return keys.init_repo(tmp_path / "tuf", NOW)


def release(version: str = "1.1.0", sha: str = "ab" * 32, **kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "version": version,
        "security_version": 2,
        "models": ["AC22", "DC50"],
        "release_class": "security",
        "customer": None,
        "images": [ImageFacts("main", sha, 1234, SIG)],
    }
    args.update(kw)
    return release_targets(**args)  # type: ignore[arg-type]


def approve(keys: TufKeys, proposal: Metadata[Targets], who: str) -> Approval:
    sig = keys.tuf(who).sign(proposal.signed_bytes)
    return Approval(sig.keyid, who, sig.signature, who)


def test_release_targets_one_per_model_with_signed_custom_fields() -> None:
    targets = release()
    assert sorted(targets) == ["firmware/AC22/1.1.0/main.cwfw", "firmware/DC50/1.1.0/main.cwfw"]
    custom = targets["firmware/AC22/1.1.0/main.cwfw"].unrecognized_fields["custom"]
    assert custom["security_version"] == 2 and custom["release_class"] == "security"
    assert custom["signature"] == SIG and custom["components"] == ["main"]


def test_release_targets_list_every_image_with_its_own_signature() -> None:
    modem_sig = base64.b64encode(b"signature of modem").decode()
    images = [ImageFacts("modem", "cd" * 32, 99, modem_sig), ImageFacts("main", "ab" * 32, 9, SIG)]
    targets = release(images=images)
    assert len(targets) == 4  # two images, two models
    for model in ("AC22", "DC50"):
        main = targets[f"firmware/{model}/1.1.0/main.cwfw"]
        modem = targets[f"firmware/{model}/1.1.0/modem.cwfw"]
        assert (modem.length, modem.hashes) == (99, {"sha256": "cd" * 32})
        assert main.unrecognized_fields["custom"]["signature"] == SIG
        assert modem.unrecognized_fields["custom"]["signature"] == modem_sig
        for target in (main, modem):
            assert target.unrecognized_fields["custom"]["components"] == ["main", "modem"]
            assert TargetCustom.from_dict(target.unrecognized_fields["custom"]).version == "1.1.0"
    # The order the images come in does not change the targets (server and approver agree).
    assert release(images=images[::-1]) == targets


def test_one_of_two_cannot_publish_two_can(repo: ImageRepository, keys: TufKeys) -> None:
    root = repo.root().signed
    proposal = repo.propose(release(), now=NOW)
    one = [approve(keys, proposal, "alice")]
    assert (
        approval_status(root, proposal, one, label_accounts(root)).describe()
        == "needs 1 more approval (1 of 2)"
    )
    with pytest.raises(Conflict, match="needs 1 more approval"):
        signed_proposal(root, proposal, one, label_accounts(root))
    # Publishing metadata signed by one key is refused by python-tuf's threshold check too.
    half = Metadata[Targets].from_bytes(proposal.to_bytes())
    half.sign(keys.tuf("alice"))
    with pytest.raises(Conflict, match="signed by 1/2"):
        repo.publish_targets(half, keys.online(), now=NOW)
    # The same person twice counts once.
    twice = [*one, approve(keys, proposal, "alice")]
    assert approval_status(root, proposal, twice, label_accounts(root)).missing == 1
    both = [*one, approve(keys, proposal, "bob")]
    version = repo.publish_targets(
        signed_proposal(root, proposal, both, label_accounts(root)), keys.online(), now=NOW
    )
    assert version == 2
    assert repo.targets().signed.version == 2
    assert sorted(repo.targets().signed.targets) == sorted(release())
    # TUF publish order: the timestamp names the snapshot that names the new targets.
    assert repo.snapshot().signed.meta["targets.json"].version == 2
    assert repo.timestamp().signed.snapshot_meta.version == repo.snapshot().signed.version


def test_one_person_holding_two_keys_counts_once(tmp_path: Path, keys: TufKeys) -> None:
    twin = keys.add("alice-2")
    approvers = [keys.tuf("alice").public_key, tuf_key(twin.public_key(), owner="alice")]
    plan = RootPlan(
        root_keys=[keys.tuf("ana").public_key],
        root_threshold=1,
        targets_keys=[*approvers, keys.tuf("bob").public_key],
        targets_threshold=2,
        snapshot_key=keys.tuf("snapshot").public_key,
        timestamp_key=keys.tuf("timestamp").public_key,
    )
    with pytest.raises(ConfigError, match="alice would hold two targets keys"):
        new_root(plan, now=NOW)
    # A root made some other way (or before keys had to equal people) still counts her once.
    root = new_root(
        dataclasses.replace(plan, targets_keys=[approvers[0]], targets_threshold=1), now=NOW
    )
    root.signed.add_key(approvers[1], Targets.type)
    root.signed.add_key(keys.tuf("bob").public_key, Targets.type)
    root.signed.roles[Targets.type].threshold = 2
    proposal = Metadata(Targets(version=2, expires=NOW + dt.timedelta(days=1)))
    sig = TufSigner(twin, approvers[1]).sign(proposal.signed_bytes)
    two_keys_one_person = [
        approve(keys, proposal, "alice"),
        Approval(sig.keyid, "alice", sig.signature, "alice"),
    ]
    status = approval_status(
        root.signed, proposal, two_keys_one_person, label_accounts(root.signed)
    )
    assert status.approvers == ("alice",) and status.missing == 1


def test_uploader_cannot_approve_and_strangers_cannot_sign(
    repo: ImageRepository, keys: TufKeys
) -> None:
    root = repo.root().signed
    proposal = repo.propose(release(), now=NOW)
    carol = keys.tuf("carol").sign(proposal.signed_bytes)
    with pytest.raises(Conflict, match="carol uploaded this release"):
        check_approval(
            root,
            proposal,
            carol,
            uploader="carol",
            submitted_by="carol",
            accounts=label_accounts(root),
        )
    with pytest.raises(Conflict, match="cannot approve"):
        check_approval(
            root,
            proposal,
            carol,
            uploader="carol",
            submitted_by="alice",
            accounts=label_accounts(root),
        )
    root_key = keys.tuf("ana").sign(proposal.signed_bytes)
    with pytest.raises(TrustError, match="not a release-approver"):
        check_approval(
            root,
            proposal,
            root_key,
            uploader="carol",
            submitted_by="ana",
            accounts=label_accounts(root),
        )
    forged = Signature(carol.keyid, keys.tuf("carol").sign(b"something else").signature)
    with pytest.raises(BadSignature, match="does not match this proposal"):
        check_approval(
            root,
            proposal,
            forged,
            uploader="dave",
            submitted_by="carol",
            accounts=label_accounts(root),
        )


def test_stale_proposal_is_refused_after_another_publish(
    repo: ImageRepository, keys: TufKeys
) -> None:
    root = repo.root().signed
    first = repo.propose(release("1.1.0"), now=NOW)
    second = repo.propose(release("1.2.0", "cd" * 32), now=NOW)
    ok = [approve(keys, first, "alice"), approve(keys, first, "bob")]
    repo.publish_targets(
        signed_proposal(root, first, ok, label_accounts(root)), keys.online(), now=NOW
    )
    late = [approve(keys, second, "alice"), approve(keys, second, "bob")]
    with pytest.raises(Conflict, match="moved on"):
        repo.publish_targets(
            signed_proposal(root, second, late, label_accounts(root)), keys.online(), now=NOW
        )


def test_a_published_path_cannot_change_contents(repo: ImageRepository, keys: TufKeys) -> None:
    root = repo.root().signed
    proposal = repo.propose(release(), now=NOW)
    both = [approve(keys, proposal, "alice"), approve(keys, proposal, "bob")]
    repo.publish_targets(
        signed_proposal(root, proposal, both, label_accounts(root)), keys.online(), now=NOW
    )
    with pytest.raises(Conflict, match="already published with different contents"):
        repo.propose(release(sha="ef" * 32), now=NOW)


def test_review_refuses_a_proposal_with_something_slipped_in(repo: ImageRepository) -> None:
    published = repo.targets().signed
    honest = repo.propose(release(), now=NOW)
    assert review_proposal(honest, published, release(), now=NOW) == sorted(release())
    sneaky = repo.propose({**release(), **release("6.6.6", "66" * 32)}, now=NOW)
    with pytest.raises(TrustError, match="not part of this release"):
        review_proposal(sneaky, published, release(), now=NOW)
    altered = repo.propose(release(sha="99" * 32), now=NOW)
    with pytest.raises(TrustError, match="other contents"):
        review_proposal(altered, published, release(), now=NOW)


def test_online_roles_renewed_before_expiry(repo: ImageRepository, keys: TufKeys) -> None:
    policy = ExpiryPolicy()
    assert repo.refresh_online(keys.online(), now=NOW) == []
    ts_version = repo.timestamp().signed.version
    later = NOW + policy.timestamp - policy.timestamp_renew + dt.timedelta(minutes=1)
    assert repo.refresh_online(keys.online(), now=later) == [Timestamp.type]
    ts = repo.timestamp().signed
    assert ts.version == ts_version + 1 and ts.expires > later + dt.timedelta(hours=12)
    assert ts.unrecognized_fields["x-chargeward-issued"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
    much_later = NOW + policy.snapshot - policy.snapshot_renew + dt.timedelta(minutes=1)
    snap_version = repo.snapshot().signed.version
    assert repo.refresh_online(keys.online(), now=much_later) == [Snapshot.type, Timestamp.type]
    assert repo.snapshot().signed.version == snap_version + 1


def test_status_warns_before_offline_roles_expire(repo: ImageRepository) -> None:
    fresh = {s.role: s for s in repo.status(now=NOW)}
    assert all(s.warning is None for s in fresh.values())
    assert fresh["root"].threshold == 2 and fresh["targets"].keys == 3
    soon = NOW + ExpiryPolicy().targets - dt.timedelta(days=10)
    warned = {s.role: s.warning for s in repo.status(now=soon)}
    assert warned["targets"] is not None and "re-sign it with the offline keys" in warned["targets"]
    assert warned["root"] is None
    assert warned["timestamp"] is not None and "EXPIRED" in warned["timestamp"]


def test_root_rotation_needs_old_and_new_thresholds(repo: ImageRepository, keys: TufKeys) -> None:
    current = repo.root().signed
    keys.add("dee")
    change = RootChange(add_root_keys=[keys.tuf("dee").public_key], remove_root_keys=["ana"])
    new = next_root(current, change, now=NOW)
    # Signed only by the new keys (ben, dee): the old threshold (2 of ana, ben, cyd) is 1 short.
    for who in ("ben", "dee"):
        new.sign(keys.tuf(who), append=True)
    with pytest.raises(TrustError, match="not signed by the current root keys"):
        repo.rotate_root(new, keys.online(), now=NOW)
    # Signed by ana and cyd (old), but only cyd of the new set (ben, cyd, dee) besides... ana gone.
    only_old = next_root(current, change, now=NOW)
    for who in ("ana", "cyd"):
        only_old.sign(keys.tuf(who), append=True)
    with pytest.raises(TrustError, match="not signed by its own root keys"):
        repo.rotate_root(only_old, keys.online(), now=NOW)
    new.sign(keys.tuf("cyd"), append=True)
    assert repo.rotate_root(new, keys.online(), now=NOW) == 2
    assert (repo.metadata_dir / "2.root.json").exists()
    assert repo.root().signed.version == 2


def test_timestamp_key_rotation_needs_the_new_online_key(
    repo: ImageRepository, keys: TufKeys
) -> None:
    keys.add("timestamp-2")
    new_ts = TufSigner(keys.signers["timestamp-2"])
    new = next_root(repo.root().signed, RootChange(timestamp_key=new_ts.public_key), now=NOW)
    for who in ("ana", "ben"):
        new.sign(keys.tuf(who), append=True)
    with pytest.raises(ConfigError, match="not the timestamp key named in the root"):
        repo.rotate_root(new, keys.online(), now=NOW)
    online = OnlineSigners(snapshot=keys.tuf("snapshot"), timestamp=new_ts)
    repo.rotate_root(new, online, now=NOW)
    ts = repo.timestamp()
    repo.root().signed.verify_delegate(Timestamp.type, ts.signed_bytes, ts.signatures)


def test_thresholds_must_be_satisfiable(keys: TufKeys) -> None:
    with pytest.raises(ConfigError, match="threshold 3 is more than its 2"):
        new_root(
            RootPlan(
                root_keys=[keys.tuf("ana").public_key, keys.tuf("ben").public_key],
                root_threshold=3,
                targets_keys=[keys.tuf("alice").public_key],
                targets_threshold=1,
                snapshot_key=keys.tuf("snapshot").public_key,
                timestamp_key=keys.tuf("timestamp").public_key,
            ),
            now=NOW,
        )


def test_every_role_key_in_an_hsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root, targets and online keys generated in a PKCS#11 token sign real TUF metadata."""
    hsm = use_softhsm(tmp_path / "softhsm", monkeypatch)
    signers = {
        name: TufSigner(s, tuf_key(s.public_key(), owner=name))
        for name in ("root-a", "approver-a", "snapshot", "timestamp")
        for s in [generate_key(hsm.uri(name), hsm.pin_source)]
    }
    root = new_root(
        RootPlan(
            root_keys=[signers["root-a"].public_key],
            root_threshold=1,
            targets_keys=[signers["approver-a"].public_key],
            targets_threshold=1,
            snapshot_key=signers["snapshot"].public_key,
            timestamp_key=signers["timestamp"].public_key,
        ),
        now=NOW,
    )
    root.sign(signers["root-a"])
    targets = empty_targets(now=NOW)
    targets.sign(signers["approver-a"])
    repo = ImageRepository(tmp_path / "tuf")
    online = OnlineSigners(snapshot=signers["snapshot"], timestamp=signers["timestamp"])
    repo.initialize(root, targets, online, now=NOW)
    verified: Root = repo.root().signed
    verified.verify_delegate(Root.type, repo.root().signed_bytes, repo.root().signatures)
    ts = repo.timestamp()
    verified.verify_delegate(Timestamp.type, ts.signed_bytes, ts.signatures)


def test_review_refuses_an_expiry_or_a_field_the_policy_does_not_allow(
    repo: ImageRepository,
) -> None:
    published = repo.targets().signed
    honest = repo.propose(release(), now=NOW)
    # The approver's clock may run a little behind the server's (ExpiryPolicy.clock_skew).
    before = NOW - dt.timedelta(minutes=9)
    assert review_proposal(honest, published, release(), now=before) == sorted(release())
    with pytest.raises(TrustError, match="beyond the 90-day targets lifetime"):
        review_proposal(honest, published, release(), now=NOW - dt.timedelta(minutes=11))
    with pytest.raises(TrustError, match="within the 1-day publishing margin"):
        review_proposal(honest, published, release(), now=NOW + dt.timedelta(days=89, hours=1))
    with pytest.raises(TrustError, match="expired at"):
        review_proposal(honest, published, release(), now=NOW + dt.timedelta(days=90))
    honest.signed.unrecognized_fields["x-note"] = "hello"
    with pytest.raises(TrustError, match="changes x-note of the published targets"):
        review_proposal(honest, published, release(), now=NOW)


def test_publish_refuses_targets_that_expire_too_soon_or_too_late(
    repo: ImageRepository, keys: TufKeys
) -> None:
    root = repo.root().signed
    proposal = repo.propose(release(), now=NOW)
    both = [approve(keys, proposal, "alice"), approve(keys, proposal, "bob")]
    signed = signed_proposal(root, proposal, both, label_accounts(root))
    before = sorted(p.name for p in repo.metadata_dir.iterdir())
    margin = ExpiryPolicy(publish_margin=dt.timedelta(days=10))
    late = ImageRepository(repo.directory, margin)
    with pytest.raises(Conflict, match="within the 10-day publishing margin"):
        late.publish_targets(signed, keys.online(), now=NOW + dt.timedelta(days=81))
    with pytest.raises(Conflict, match="beyond the 90-day targets lifetime"):
        repo.publish_targets(signed, keys.online(), now=NOW - dt.timedelta(days=1))
    assert sorted(p.name for p in repo.metadata_dir.iterdir()) == before
    assert repo.publish_targets(signed, keys.online(), now=NOW + dt.timedelta(days=80)) == 2
