"""The offline verifier's rules on the log's content: two-person campaign starts and release
publications backed by the approvals they needed (hash and checkpoint checks are in
tests/attack/test_audit_tampering.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from chargeward.audit.verify import ExportedEntry, RuleViolation, check_rules

NOW = dt.datetime(2026, 12, 8, tzinfo=dt.UTC)


def log(*entries: tuple[str, str, str, dict[str, Any]]) -> list[ExportedEntry]:
    return [
        ExportedEntry(n + 100, n, NOW, actor, action, target, None, details)
        for n, (actor, action, target, details) in enumerate(entries)
    ]


CREATED = ("carol", "campaign.created", "campaign:1", {"name": "big", "needs_approval": True})
SMALL = ("carol", "campaign.created", "campaign:2", {"name": "small", "needs_approval": False})
PROGRESS = ("system", "campaign.progress", "campaign:1", {"note": "stage 0"})
DISPATCH = ("campaign:big", "firmware.update_requested", "CP-1", {})


def test_a_campaign_that_needed_approval_runs_only_after_a_second_person_approved() -> None:
    approved = ("dave", "campaign.approved", "campaign:1", {})
    assert check_rules(log(CREATED, approved, PROGRESS, DISPATCH, SMALL, PROGRESS)) == 2
    assert check_rules(log(SMALL, ("system", "campaign.progress", "campaign:2", {}))) == 1
    with pytest.raises(RuleViolation, match=r"entry index 1 \(id 101\): campaign:1 ran"):
        check_rules(log(CREATED, PROGRESS, approved))
    with pytest.raises(
        RuleViolation, match=r"index 1 \(id 101\): campaign:1 ran \(firmware.update_requested\)"
    ):
        check_rules(log(CREATED, DISPATCH))
    with pytest.raises(RuleViolation, match="approved by its own creator 'carol'"):
        check_rules(log(CREATED, ("carol", "campaign.approved", "campaign:1", {}), PROGRESS))


def _approval(who: str) -> tuple[str, str, str, dict[str, Any]]:
    return (who, "release.approved", "rel-1", {"proposal": 4, "approver": who, "counted": True})


def _publish(
    approvers: list[str], threshold: int | None = 2
) -> tuple[str, str, str, dict[str, Any]]:
    details: dict[str, Any] = {"proposal": 4, "approvers": approvers}
    if threshold is not None:
        details["threshold"] = threshold
    return ("rm", "release.published", "rel-1", details)


def _upload(**details: Any) -> tuple[str, str, str, dict[str, Any]]:
    base: dict[str, Any] = {
        "version": "1.2.0",
        "sbom": {"sha256": "ab" * 32, "packages": 7},
        "scan": {"decision": "passed", "findings": 1, "blocking": 0, "accepted": 1},
    }
    return ("carol", "release.upload", "rel-1", {**base, **details})


UPLOAD = _upload()


def test_a_release_is_published_only_after_the_approvals_it_needed() -> None:
    assert (
        check_rules(log(UPLOAD, _approval("ann"), _approval("bob"), _publish(["ann", "bob"]))) == 1
    )
    assert check_rules(log(UPLOAD, _approval("ann"), _publish(["ann"], threshold=None))) == 1
    with pytest.raises(RuleViolation, match=r"index 2 .*does not show before it: bob"):
        check_rules(log(UPLOAD, _approval("ann"), _publish(["ann", "bob"]), _approval("bob")))
    with pytest.raises(RuleViolation, match="with 1 of the 2 approvals it needed"):
        check_rules(log(UPLOAD, _approval("ann"), _publish(["ann"])))
    with pytest.raises(RuleViolation, match="nobody"):
        check_rules(log(UPLOAD, _publish([], threshold=0)))


def test_a_release_is_published_only_after_an_upload_with_sbom_and_a_passed_scan() -> None:
    approvals = (_approval("ann"), _approval("bob"), _publish(["ann", "bob"]))
    with pytest.raises(RuleViolation, match=r"index 2 .*shows no upload \(build\) of it before"):
        check_rules(log(*approvals))
    with pytest.raises(RuleViolation, match=r"index 3 .*rel-1 was published without an SBOM"):
        check_rules(log(_upload(sbom=None), *approvals))
    with pytest.raises(RuleViolation, match="without a vulnerability scan in its upload"):
        check_rules(log(_upload(scan=None), *approvals))
    with pytest.raises(RuleViolation, match="its vulnerability scan says 'refused'"):
        check_rules(log(_upload(scan={"decision": "refused"}), *approvals))
    # The upload must come before the publication, not after it.
    with pytest.raises(RuleViolation, match="shows no upload"):
        check_rules(log(*approvals, UPLOAD))
