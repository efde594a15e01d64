"""Tenant roles in the image repository: an existing repository's public customer-locked
targets move into their customer's role at the next proposal (ADR 0026), and the approver's
review accepts that move only with identical contents."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from chargeward.errors import NotFound, TrustError
from chargeward.model.targets import tenant_path, tenant_role
from chargeward.publish import ImageRepository
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.trust.approval import Approval, label_accounts, signed_files, signed_proposal
from chargeward.trust.review import Published, review_files
from tests.support.trust import TufKeys

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
SIG = base64.b64encode(b"signature of main").decode()
CUSTOMER = "fleet-a"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TufKeys:
    return TufKeys.create(tmp_path_factory.mktemp("tenant-repo-keys"))


def _release(version: str, sha: str, customer: str | None) -> dict[str, TargetFile]:
    return release_targets(
        version=version,
        security_version=2,
        models=["AC22", "DC50"],
        release_class="security",
        customer=customer,
        images=[ImageFacts("main", sha, 1234, SIG)],
    )


def _published(repo: ImageRepository) -> Published:
    top = repo.targets().signed
    roles = {n: repo.delegated(n, v).signed for n, v in repo.role_versions().items()}
    return Published(repo.root().signed, top, roles)


def _old_repository(tmp_path: Path, keys: TufKeys) -> tuple[ImageRepository, list[str]]:
    """A repository as published before ADR 0026: fleet-a's release listed publicly."""
    repo = keys.init_repo(tmp_path / "tuf", NOW)
    locked = {}
    for path, tf in _release("7.3.1", "aa" * 32, CUSTOMER).items():
        public = path.split("/", 2)[2]  # tenants/<id>/firmware/... -> firmware/...
        locked[public] = TargetFile(tf.length, tf.hashes, public, dict(tf.unrecognized_fields))
    proposal = repo.propose(locked, now=NOW)
    approvals = []
    for who in ("alice", "bob"):
        sig = keys.tuf(who).sign(proposal.signed_bytes)
        approvals.append(Approval(sig.keyid, who, sig.signature, who))
    root = repo.root().signed
    signed = signed_proposal(root, proposal, approvals, label_accounts(root))
    repo.publish_targets(signed, keys.online(), now=NOW)
    return repo, sorted(locked)


def test_public_customer_locked_targets_move_into_the_tenant_role_at_the_next_proposal(
    tmp_path: Path, keys: TufKeys
) -> None:
    repo, public_paths = _old_repository(tmp_path, keys)
    assert all(p in repo.targets().signed.targets for p in public_paths)
    fleet_wide = _release("1.2.0", "cd" * 32, None)
    files = repo.propose_files(fleet_wide, now=NOW)
    role = tenant_role(CUSTOMER)
    assert set(files.roles) == {role}
    moved = sorted(tenant_path(CUSTOMER, p) for p in public_paths)
    assert sorted(files.roles[role].signed.targets) == moved
    assert not set(public_paths) & set(files.targets.signed.targets)
    for old in public_paths:  # same length, hashes and custom fields, under the tenant path
        before = repo.targets().signed.targets[old].to_dict()
        assert files.roles[role].signed.targets[tenant_path(CUSTOMER, old)].to_dict() == before

    # The approver's review accepts exactly this move and shows it.
    review = review_files(files.targets, files.roles, _published(repo), fleet_wide, now=NOW)
    assert review.moved_out == public_paths and review.changed == sorted(fleet_wide)
    assert review.roles[role].moved == tuple(moved) and review.roles[role].new
    assert review.roles[role].customers == (CUSTOMER,) and review.roles[role].added == ()
    # ... but not a move that changes what was published
    forged = Metadata[Targets].from_bytes(files.roles[role].to_bytes())
    forged.signed.targets[moved[0]].hashes["sha256"] = "66" * 32
    with pytest.raises(TrustError, match=r"moves .* with other contents"):
        review_files(files.targets, {role: forged}, _published(repo), fleet_wide, now=NOW)
    dropped = Metadata[Targets].from_bytes(files.roles[role].to_bytes())
    del dropped.signed.targets[moved[0]]
    with pytest.raises(TrustError, match="removes the published target"):
        review_files(files.targets, {role: dropped}, _published(repo), fleet_wide, now=NOW)

    # Approved and published: the locked release is listed only in the tenant role.
    approvals = []
    for who in ("alice", "bob"):
        signer = keys.tuf(who)
        top = signer.sign(files.targets.signed_bytes)
        sigs = {n: signer.sign(md.signed_bytes).signature for n, md in files.roles.items()}
        approvals.append(Approval(top.keyid, who, top.signature, who, sigs))
    root = repo.root().signed
    top_md, roles_md = signed_files(
        root, files.targets, files.roles, approvals, label_accounts(root)
    )
    earlier = sorted(p.name for p in repo.metadata_dir.glob("*.targets.json"))
    assert earlier == ["1.targets.json", "2.targets.json"]
    repo.publish_targets(top_md, keys.online(), now=NOW, roles=roles_md)
    listed = repo.targets().signed.targets
    assert sorted(listed) == sorted(fleet_wide)  # nothing customer-locked in public
    # ... and no earlier version that listed it stays served (the red team's old N.targets.json)
    with pytest.raises(NotFound):
        repo.metadata_file("2.targets.json")
    repo.metadata_file("1.targets.json")  # listed nothing customer-locked: kept
    for name in (p.name for p in repo.metadata_dir.glob("*.json")):
        assert CUSTOMER.encode() not in repo.metadata_file(name).read_bytes() or name.split(".", 1)[
            1
        ].startswith("tenant-"), name
    assert sorted(repo.delegated(role).signed.targets) == moved
    # the next proposal keeps them there and re-signs the role
    again = repo.propose_files({}, now=NOW)
    assert sorted(again.roles[role].signed.targets) == moved
    assert again.roles[role].signed.version == 2
