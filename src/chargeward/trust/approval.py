"""k-of-n release approval: who may sign a targets proposal, and when it is approved enough.

Pure functions of metadata, signatures and the approver-key registry (``accounts``: keyid to
the operator account that holds the key, :mod:`chargeward.server.rollout.approver_keys`); the server
stores approvals, the CLI makes them.

    approval = check_approval(root, proposal, signature, uploader="carol",
                              submitted_by="alice", accounts=accounts)
    approval_status(root, proposal, [approval], accounts).missing
    # -> 1

Rules (one decision, enforced here and nowhere else), all comparing **accounts**, never the
free-text owner labels of the root metadata:

* only keys of the ``targets`` role (approvers named in the root metadata) that are bound to an
  account may approve;
* the account that uploaded a release can neither approve it (with a key bound to it) nor
  submit an approval for it;
* an account submits approvals made with its own key only (:class:`NotKeyHolder` otherwise);
* approvals are counted per account (person): one person with two keys counts once;
* the signatures must verify over the exact proposal bytes, and python-tuf must agree that the
  threshold is met before anything is published;
* a proposal that also carries tenant roles (customer-locked releases, ADR 0026) is approved
  by one signature per role file besides the top-level one, all by the same key: an approval
  missing or failing one of them does not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Signature
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Targets

from chargeward import strictjson
from chargeward.errors import BadSignature, BundleError, Conflict, TrustError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.trust.tuf_keys import key_owner

TARGETS = Targets.type
Accounts = Mapping[str, str]  # keyid -> the operator account holding that approver key


class ApprovalRefused(Conflict):
    """An approval the rules forbid (the server audits it); ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotKeyHolder(ApprovalRefused):
    """An account submitted an approval signed with a key bound to another account."""

    def __init__(self, message: str) -> None:
        super().__init__("not-key-holder", message)


def label_accounts(root: Root) -> dict[str, str]:
    """The registry a root's owner labels imply (each label names its account), for checks
    made without the server's registry (tests, offline tools)."""
    return {k: key_owner(root.keys[k]) for k in root.roles[TARGETS].keyids}


@dataclass(frozen=True)
class Approval:
    keyid: str
    owner: str  # the account the key is bound to (the approver)
    signature: str  # hex DER, as in TUF metadata
    submitted_by: str
    roles: Mapping[str, str] = field(default_factory=dict)  # tenant role -> signature (hex)


@dataclass(frozen=True)
class ApprovalStatus:
    threshold: int
    approvers: tuple[str, ...]

    @property
    def missing(self) -> int:
        return max(0, self.threshold - len(self.approvers))

    @property
    def approved(self) -> bool:
        return self.missing == 0

    def describe(self) -> str:
        have = len(self.approvers)
        if self.approved:
            return f"approved by {', '.join(self.approvers)} ({have} of {self.threshold})"
        more = "approval" if self.missing == 1 else "approvals"
        return f"needs {self.missing} more {more} ({have} of {self.threshold})"


def _verify(root: Root, payload: bytes, signature: Signature) -> str:
    """Check one signature over the proposal's canonical bytes; returns the key owner."""
    role = root.roles[TARGETS]
    if signature.keyid not in role.keyids:
        raise TrustError(f"key {signature.keyid[:12]} is not a release-approver (targets) key")
    key = root.keys[signature.keyid]
    try:
        key.verify_signature(signature, payload)
    except UnverifiedSignatureError as e:
        raise BadSignature(
            f"signature by {key_owner(key)} does not match this proposal "
            "(it may have changed since it was fetched)"
        ) from e
    return key_owner(key)


Roles = Mapping[str, Metadata[Targets]]  # tenant role name -> its proposed metadata


def _verify_roles(
    root: Root, keyid: str, roles: Roles, signatures: Mapping[str, str], payloads: dict[str, bytes]
) -> None:
    """One signature by ``keyid`` over each proposed role file, and nothing else."""
    extra = sorted(set(signatures) - set(roles))
    if extra:
        raise BadSignature(f"a signature for {extra[0]}, which this proposal does not change")
    for name in roles:
        sig = signatures.get(name)
        if sig is None:
            raise BadSignature(f"the approval lacks a signature over the proposal's {name}")
        if name not in payloads:
            payloads[name] = roles[name].signed_bytes
        _verify(root, payloads[name], Signature(keyid, sig))


def check_approval(
    root: Root,
    proposal: Metadata[Targets],
    signature: Signature,
    *,
    uploader: str,
    submitted_by: str,
    accounts: Accounts,
    roles: Roles | None = None,
    role_signatures: Mapping[str, str] | None = None,
) -> Approval:
    """Accept or refuse one approval of a proposal uploaded by account ``uploader``, submitted
    by account ``submitted_by``; ``accounts`` binds approver keys to accounts.  ``roles``:
    the tenant role files the proposal also changes, each signed in ``role_signatures``."""
    label = _verify(root, proposal.signed_bytes, signature)
    keyid = signature.keyid
    _verify_roles(root, keyid, roles or {}, role_signatures or {}, {})
    account = accounts.get(keyid)
    if account is None:
        raise ApprovalRefused(
            "unbound-key",
            f"approver key {keyid[:12]} ({label}) is not bound to an operator account: "
            "bind it with `chargeward repo register-keys` on the server host",
        )
    if uploader in (account, submitted_by):
        raise ApprovalRefused("uploader", f"{uploader} uploaded this release and cannot approve it")
    if submitted_by != account:
        raise NotKeyHolder(
            f"key {keyid[:12]} is the approver key of {account}: {submitted_by} cannot submit "
            "an approval made with another person's key"
        )
    return Approval(keyid, account, signature.signature, submitted_by, dict(role_signatures or {}))


def _counted(
    root: Root,
    proposal: Metadata[Targets],
    approvals: Iterable[Approval],
    accounts: Accounts,
    roles: Roles | None = None,
) -> dict[str, Approval]:
    """One valid approval per account (the first seen), submitted by that account, with a
    valid signature over the top-level targets and over every tenant role in ``roles``."""
    by_account: dict[str, Approval] = {}
    payload = proposal.signed_bytes  # canonical JSON is costly: encode once
    payloads: dict[str, bytes] = {}
    for a in approvals:
        account = accounts.get(a.keyid)
        if account is None or a.submitted_by != account:
            continue
        try:
            _verify(root, payload, Signature(a.keyid, a.signature))
            _verify_roles(root, a.keyid, roles or {}, a.roles, payloads)
        except TrustError:
            continue
        by_account.setdefault(account, a)
    return by_account


def approval_status(
    root: Root,
    proposal: Metadata[Targets],
    approvals: Iterable[Approval],
    accounts: Accounts,
    roles: Roles | None = None,
) -> ApprovalStatus:
    counted = _counted(root, proposal, approvals, accounts, roles)
    return ApprovalStatus(root.roles[TARGETS].threshold, tuple(sorted(counted)))


def signed_proposal(
    root: Root, proposal: Metadata[Targets], approvals: Iterable[Approval], accounts: Accounts
) -> Metadata[Targets]:
    """The proposal with one signature per approver account; refuses below threshold."""
    return signed_files(root, proposal, {}, approvals, accounts)[0]


def signed_files(
    root: Root,
    proposal: Metadata[Targets],
    roles: Roles,
    approvals: Iterable[Approval],
    accounts: Accounts,
) -> tuple[Metadata[Targets], dict[str, Metadata[Targets]]]:
    """The top-level targets and every tenant role, each with one signature per counted
    approver account; refuses below threshold."""
    counted = _counted(root, proposal, approvals, accounts, roles)
    status = ApprovalStatus(root.roles[TARGETS].threshold, tuple(sorted(counted)))
    if not status.approved:
        raise Conflict(f"cannot publish: {status.describe()}")
    signed = Metadata[Targets].from_bytes(proposal.to_bytes())
    signed.signatures.clear()
    for a in counted.values():
        signed.signatures[a.keyid] = Signature(a.keyid, a.signature)
    try:
        root.verify_delegate(TARGETS, signed.signed_bytes, signed.signatures)
    except UnsignedMetadataError as e:  # defence in depth: python-tuf must agree
        raise Conflict(f"cannot publish: {e}") from e
    out = {}
    for name, md in roles.items():
        role = Metadata[Targets].from_bytes(md.to_bytes())
        role.signatures.clear()
        for a in counted.values():
            role.signatures[a.keyid] = Signature(a.keyid, a.roles[name])
        try:
            signed.signed.verify_delegate(name, role.signed_bytes, role.signatures)
        except UnsignedMetadataError as e:
            raise Conflict(f"cannot publish {name}: {e}") from e
        out[name] = role
    return signed, out


# -- approval files: a signature made on the approver's machine, submitted elsewhere ---------

APPROVAL_FORMAT = "chargeward-approval/1"
ROLE_ALLOWANCE = 300  # ... plus one line per tenant role it signs


@dataclass(frozen=True)
class ApprovalFile:
    """What ``chargeward release approve --output`` writes: one signature over one proposal."""

    proposal: int
    release_id: str | None
    keyid: str
    signature: str
    roles: Mapping[str, str] = field(default_factory=dict)  # tenant role -> signature


def approval_document(
    proposal: int,
    release_id: str | None,
    keyid: str,
    signature: str,
    roles: Mapping[str, str] | None = None,
) -> dict[str, object]:
    doc: dict[str, object] = {
        "format": APPROVAL_FORMAT,
        "proposal": proposal,
        "release": release_id,
        "keyid": keyid,
        "signature": signature,
    }
    if roles:
        doc["roles"] = dict(roles)
    return doc


def parse_approval_file(text: str) -> ApprovalFile:
    """Read an approval file; :class:`~chargeward.errors.BundleError` says what is wrong.

    Only the shape is checked here: the signature itself is checked by the server against
    the proposal's bytes and the approver keys of the trusted root (:func:`check_approval`).
    """
    if (
        len(text)
        > DEFAULT_FORMAT_LIMITS.approval_file_bytes
        + ROLE_ALLOWANCE * DEFAULT_FORMAT_LIMITS.approval_roles
    ):
        raise BundleError(f"approval file is {len(text)} characters; one is a few hundred")
    try:
        doc = strictjson.loads(text.encode())
    except ValueError as e:
        raise BundleError(f"approval file {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != APPROVAL_FORMAT:
        raise BundleError(
            f"not an approval file (expected format {APPROVAL_FORMAT!r}, from "
            "`chargeward release approve --output`)"
        )
    proposal, release = doc.get("proposal"), doc.get("release")
    if not isinstance(proposal, int) or isinstance(proposal, bool) or proposal < 1:
        raise BundleError("approval file: 'proposal' must be a proposal number")
    if release is not None and not isinstance(release, str):
        raise BundleError("approval file: 'release' must be a release id")
    roles = doc.get("roles", {})
    if (
        not isinstance(roles, dict)
        or len(roles) > DEFAULT_FORMAT_LIMITS.approval_roles
        or not all(isinstance(k, str) and re.fullmatch(r"tenant-[0-9a-f]{32}", k) for k in roles)
    ):
        raise BundleError("approval file: 'roles' must map tenant roles to signatures")
    if len(text) > DEFAULT_FORMAT_LIMITS.approval_file_bytes + ROLE_ALLOWANCE * len(roles):
        raise BundleError(f"approval file is {len(text)} characters; one is a few hundred")
    return ApprovalFile(
        proposal,
        release,
        _hex(doc, "keyid"),
        _hex(doc, "signature"),
        {k: _hex(roles, k) for k in roles},
    )


def _hex(doc: dict[str, object], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{16,400}", value):
        raise BundleError(f"approval file: {name!r} must be lowercase hex")
    return value
