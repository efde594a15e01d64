"""Roles and their permissions: the one table every API decision is made from.

    >>> "releases:approve" in ROLE_PERMISSIONS["approver"]
    True
    >>> "releases:upload" in ROLE_PERMISSIONS["approver"]
    False

=================  ===================================================================
permission         allows
=================  ===================================================================
stations:read      list and inspect stations, their certificates and update results
stations:write     import stations, edit station records (sites, models, tags)
stations:command   send commands to stations: firmware updates, certificates, GetLog
releases:read      list releases, proposals and the TUF repository status
releases:upload    upload a signed release bundle
releases:approve   submit an approval signature for a proposal
releases:publish   publish an approved proposal; propose a CRL (revocation)
campaigns:read     see rollout campaigns
campaigns:write    create, pause, resume, abort, retry and roll back rollout campaigns
campaigns:approve  start a campaign above the approval size (never one's own)
users:manage       create users, change roles, disable accounts, see every API token
audit:read         read the audit log, its proofs and checkpoints, station security events
audit:sign         sign an audit-log checkpoint on demand (the leader also signs on a timer)
logs:read          download log files uploaded by stations
metrics:read       read server metrics and cluster status
integration:report an external CSMS: read update orders, report what stations said
=================  ===================================================================

=================  =========================================================================
role               permissions
=================  =========================================================================
admin              every permission
release-manager    stations:read, releases:read/upload/publish, campaigns:read/write,
                   audit:read, metrics:read
approver           stations:read, releases:read/approve, campaigns:read/approve, audit:read
operator           stations:read/write/command, releases:read, campaigns:read/write,
                   logs:read, metrics:read
auditor            stations:read, releases:read, campaigns:read, audit:read, logs:read,
                   metrics:read
=================  =========================================================================

Every role except ``auditor`` is privileged: its users must log in with a TOTP code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PERMISSIONS: frozenset[str] = frozenset(
    {
        "stations:read",
        "stations:write",
        "stations:command",
        "releases:read",
        "releases:upload",
        "releases:approve",
        "releases:publish",
        "campaigns:read",
        "campaigns:write",
        "campaigns:approve",
        "users:manage",
        "audit:read",
        "audit:sign",
        "logs:read",
        "metrics:read",
        "integration:report",  # ADR 0042: admin only, or a token scoped to it
    }
)

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": PERMISSIONS,
    "release-manager": frozenset(
        {
            "stations:read",
            "releases:read",
            "releases:upload",
            "releases:publish",
            "campaigns:read",
            "campaigns:write",
            "audit:read",
            "metrics:read",
        }
    ),
    "approver": frozenset(
        {
            "stations:read",
            "releases:read",
            "releases:approve",
            "campaigns:read",
            "campaigns:approve",
            "audit:read",
        }
    ),
    "operator": frozenset(
        {
            "stations:read",
            "stations:write",
            "stations:command",
            "releases:read",
            "campaigns:read",
            "campaigns:write",
            "logs:read",
            "metrics:read",
        }
    ),
    "auditor": frozenset(
        {
            "stations:read",
            "releases:read",
            "campaigns:read",
            "audit:read",
            "logs:read",
            "metrics:read",
        }
    ),
}
ROLES: tuple[str, ...] = tuple(ROLE_PERMISSIONS)
PRIVILEGED_ROLES: frozenset[str] = frozenset(ROLES) - {"auditor"}

PrincipalKind = Literal["session", "token", "service"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a logged-in user (``session``), a user's scoped API token (``token``,
    acting as its owner), or a token made on the server host (``service``, e.g. ``admin``)."""

    name: str
    role: str | None
    kind: PrincipalKind
    permissions: frozenset[str]
    credential_id: int
    customer: str | None = None  # a customer account: that customer's stations only
    # a privileged account without TOTP: no permissions until it enrols (ADR 0028)
    totp_enrolment_required: bool = False
    # a host token (or one it minted) acting under its own name, not a user's
    host: bool = False

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def permissions_of(role: str | None) -> frozenset[str]:
    """The permissions of ``role``; none for an unknown role (fail closed)."""
    return ROLE_PERMISSIONS.get(role or "", frozenset())
