"""Approval files (``chargeward release approve --output``): written, read back, and refused
with a clear message when they are anything else."""

from __future__ import annotations

import json

import pytest

from chargeward.errors import BundleError
from chargeward.trust.approval import ApprovalFile, approval_document, parse_approval_file

KEYID, SIG = "ab" * 32, "30" + "cd" * 35


def test_an_approval_file_round_trips() -> None:
    text = json.dumps(approval_document(3, "ef" * 32, KEYID, SIG))
    assert parse_approval_file(text) == ApprovalFile(3, "ef" * 32, KEYID, SIG)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ('{"format": 1, "format": 2}', "repeats the key"),
        ("[1, 2]", "not an approval file"),
        ('{"keyid": "x"}', "not an approval file"),
        (json.dumps({**approval_document(3, None, KEYID, SIG), "proposal": "3"}), "'proposal'"),
        (json.dumps({**approval_document(3, None, KEYID, SIG), "proposal": True}), "'proposal'"),
        (json.dumps(approval_document(3, None, KEYID.upper(), SIG)), "'keyid' must be lowercase"),
        (json.dumps(approval_document(3, None, KEYID, "")), "'signature'"),
        (json.dumps(approval_document(3, None, KEYID, SIG)) + " " * 5000, "characters"),
    ],
)
def test_anything_else_is_refused_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        parse_approval_file(text)


def test_an_approval_file_carries_its_tenant_role_signatures() -> None:
    """``release approve --output`` of a proposal with tenant roles (ADR 0026): one signature
    per role file, read back for the dashboard to submit as the approval's ``roles``."""
    role = "tenant-" + "0a" * 16
    text = json.dumps(approval_document(3, "ef" * 32, KEYID, SIG, {role: SIG}))
    assert parse_approval_file(text).roles == {role: SIG}
    for roles in ({"targets": SIG}, {role: "zz"}, [SIG]):
        doc = {**approval_document(3, None, KEYID, SIG), "roles": roles}
        with pytest.raises(BundleError):
            parse_approval_file(json.dumps(doc))
