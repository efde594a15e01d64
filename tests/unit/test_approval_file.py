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
