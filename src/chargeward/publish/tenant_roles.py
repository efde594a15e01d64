"""Customer-locked targets in TUF: one delegated targets role per customer (``tenant-<id>``),
signed by the same approver keys and threshold as the top-level targets (ADR 0026).
"""

from __future__ import annotations

from tuf.api.metadata import DelegatedRole, Delegations, Root, TargetFile, Targets

from chargeward.model.targets import TENANT_ROLE_PREFIX, tenant_delegation_pattern


def is_tenant_role(name: str) -> bool:
    return name.startswith(TENANT_ROLE_PREFIX)


def tenant_role_of_id(tid: str) -> str:
    return f"{TENANT_ROLE_PREFIX}{tid}"


def custom_customer(tf: TargetFile) -> str | None:
    custom = tf.unrecognized_fields.get("custom")
    customer = custom.get("customer") if isinstance(custom, dict) else None
    return customer if isinstance(customer, str) else None


def tenant_delegations(
    root: Root, current: Delegations | None, tenant_ids: list[str]
) -> Delegations | None:
    """The top-level delegations: the published ones other than tenant roles, then one
    terminating role per tenant id for its prefix, with the root's approver keys and
    threshold (kept in step with the root at every proposal)."""
    if not tenant_ids:
        return current
    keyids = sorted(root.roles[Targets.type].keyids)
    threshold = root.roles[Targets.type].threshold
    roles: dict[str, DelegatedRole] = {}
    keys = {}
    if current is not None:
        for name, role in (current.roles or {}).items():
            if not is_tenant_role(name):
                roles[name] = role
                keys.update({k: current.keys[k] for k in role.keyids if k in current.keys})
    for tid in tenant_ids:
        name = tenant_role_of_id(tid)
        pattern = tenant_delegation_pattern(tid, is_id=True)
        roles[name] = DelegatedRole(name, keyids, threshold, True, paths=[pattern])
    keys.update({k: root.keys[k] for k in keyids})
    return Delegations(keys=keys, roles=roles)
