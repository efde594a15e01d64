"""``chargeward repo``: the TUF image repository's offline ceremonies and health.

    $ chargeward repo init --data-dir srv \\
          --root-key ana=file:keys/root-ana.pem --root-key ben=pkcs11:token=root;object=ben \\
          --root-key cyd=file:keys/root-cyd.pem --root-threshold 2 \\
          --targets-key alice=file:keys/alice.pem --targets-key bob=file:keys/bob.pem \\
          --targets-threshold 2 \\
          --snapshot-key file:srv/keys/snapshot.pem --timestamp-key file:srv/keys/timestamp.pem \\
          --root-out root.json
    $ chargeward repo status --data-dir srv --check
    $ chargeward repo rotate-root --data-dir srv --timestamp-key file:new-ts.pem \\
          --sign-with file:keys/root-ana.pem --sign-with file:keys/root-cyd.pem

``root-out`` is the root every charger is given at manufacture (``agent init --tuf-root``).
Root and targets keys are offline keys: these commands are run where they are held.

Keys equal people: one owner holds one root key and one targets key at most, and each targets
key's OWNER is the operator account that approves with it (``--account LABEL=ACCOUNT`` when
the label is not the account name).  ``init`` and ``rotate-root`` bind the new root's targets
keys to those accounts on the server (audited); ``register-keys`` does it for a repository
made before, and ``approver-keys`` lists the bindings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Timestamp

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import (
    DEFAULT_DATA_DIR,
    DataDir,
    ServerUrl,
    actor,
    console,
    in_session,
    open_signer,
)
from chargeward.cli.display import when
from chargeward.cli.release_approval import approve_proposal, trusted_root
from chargeward.crypto.keys import Signer
from chargeward.errors import ConfigError
from chargeward.fileio import write_new_file
from chargeward.model.targets import REVOCATION_TARGET
from chargeward.publish import ImageRepository, OnlineSigners
from chargeward.publish.roles import RootChange, create_repository, next_root
from chargeward.server.rollout import approver_keys
from chargeward.trust.tuf_keys import TufSigner, key_owner, tuf_key

app = typer.Typer(no_args_is_help=True)

KeySpecs = Annotated[list[str], typer.Option(help="OWNER=KEY-URI (repeat).")]
AccountSpecs = Annotated[
    list[str],
    typer.Option(
        "--account",
        help="LABEL=ACCOUNT: the operator account of a targets key whose owner label is not "
        "the account name (repeat).",
    ),
]


def _accounts(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        label, sep, account = spec.partition("=")
        if not sep or not label or not account or label in out:
            raise ConfigError(
                f"--account must be given once per label as LABEL=ACCOUNT, got {spec!r}"
            )
        out[label] = account
    return out


def _bind(
    data_dir: Path,
    root_version: int,
    found: list[approver_keys.Binding],
    action: str,
    details: dict[str, object],
) -> None:
    """Bind approver keys to accounts and audit the ceremony, in one transaction."""
    from chargeward import audit

    now = _now()
    who = actor()

    async def work(s: AsyncSession) -> None:
        await audit.record(
            s, actor=who, action=action, target=f"root v{root_version}", details=details, now=now
        )
        await approver_keys.register(s, root_version, found, actor=who, now=now)

    in_session(data_dir, work)


def _print_bindings(found: list[approver_keys.Binding]) -> None:
    for b in found:
        console.print(
            Text(f"approver key {b.keyid[:12]} ({b.label}) is held by account {b.account}"),
            soft_wrap=True,
        )


def _signer(uri: str, what: str) -> Signer:
    return open_signer(uri, what)


def _owned(specs: list[str], role: str) -> list[TufSigner]:
    out = []
    for spec in specs:
        owner, sep, uri = spec.partition("=")
        if not sep or not owner or not uri:
            raise ConfigError(f"{role} key must be given as OWNER=KEY-URI, got {spec!r}")
        signer = _signer(uri, f"{role} key of {owner}")
        out.append(TufSigner(signer, tuf_key(signer.public_key(), owner=owner)))
    return out


def _online(uri: str, role: str) -> TufSigner:
    return TufSigner(_signer(uri, f"{role} key"))


def _repo(data_dir: Path) -> ImageRepository:
    return ImageRepository(data_dir / "tuf")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@app.command("init")
def init(
    root_key: KeySpecs,
    targets_key: KeySpecs,
    snapshot_key: Annotated[str, typer.Option(help="Online snapshot key URI (server).")],
    timestamp_key: Annotated[str, typer.Option(help="Online timestamp key URI (server).")],
    root_threshold: Annotated[int, typer.Option(min=1)] = 2,
    targets_threshold: Annotated[int, typer.Option(min=1, help="Approvals a release needs.")] = 2,
    root_out: Annotated[
        Path | None, typer.Option(help="Also write root version 1 here (for chargers).")
    ] = None,
    account: AccountSpecs = [],  # noqa: B006 (typer needs a literal default)
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create the repository: root (signed by every root key) and empty targets, and bind each
    targets key to the operator account of its owner."""
    repo = _repo(data_dir)
    roots = _owned(root_key, "root")
    approvers = _owned(targets_key, "targets")
    found = approver_keys.bindings([s.public_key for s in approvers], _accounts(account))
    online = OnlineSigners(
        snapshot=_online(snapshot_key, "snapshot"), timestamp=_online(timestamp_key, "timestamp")
    )
    root = create_repository(
        repo,
        root_signers=roots,
        root_threshold=root_threshold,
        approver_signers=approvers,
        targets_threshold=targets_threshold,
        online=online,
        now=_now(),
    )
    repo.set_online_key_uris({"snapshot": snapshot_key, "timestamp": timestamp_key})
    if root_out is not None:
        write_new_file(root_out, root.to_bytes())
    _bind(
        data_dir,
        1,
        found,
        "repo.init",
        {
            "root_keys": {key_owner(s.public_key): s.public_key.keyid for s in roots},
            "root_threshold": root_threshold,
            "targets_keys": {key_owner(s.public_key): s.public_key.keyid for s in approvers},
            "targets_threshold": targets_threshold,
        },
    )
    _print_bindings(found)
    console.print(
        Text(
            f"TUF repository created in {repo.directory}: root {root_threshold} of {len(roots)}, "
            f"release approval {targets_threshold} of {len(approvers)}"
        ),
        soft_wrap=True,
    )


@app.command("status")
def status(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when any role needs attention.")
    ] = False,
) -> None:
    """Versions and expiry of every role, with warnings before offline roles expire."""
    repo = _repo(data_dir)
    rows = repo.status(now=_now())
    table = Table(title="TUF repository")
    for col in ("role", "version", "expires", "keys", "threshold", "attention"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.role,
            str(r.version),
            when(r.expires),
            str(r.keys),
            str(r.threshold),
            Text(r.warning or "ok", style="bold yellow" if r.warning else "green"),
        )
    console.print(table)
    if check and any(r.warning for r in rows):
        raise typer.Exit(1)


@app.command("root")
def export_root(
    out: Annotated[Path, typer.Option(help="Where to write the newest root.json.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Write the newest root metadata (for provisioning chargers and independent checks)."""
    write_new_file(out, _repo(data_dir).root().to_bytes())
    console.print(Text(f"wrote {out}"), soft_wrap=True)


@app.command("rotate-root")
def rotate_root(
    sign_with: Annotated[
        list[str], typer.Option(help="Root key URI to sign with (old and new; repeat).")
    ],
    add_root_key: KeySpecs = [],  # noqa: B006 (typer needs a literal default)
    remove_root_key: Annotated[list[str], typer.Option(help="Owner or keyid.")] = [],  # noqa: B006
    root_threshold: Annotated[int | None, typer.Option(min=1)] = None,
    add_targets_key: KeySpecs = [],  # noqa: B006
    remove_targets_key: Annotated[list[str], typer.Option(help="Owner or keyid.")] = [],  # noqa: B006
    targets_threshold: Annotated[int | None, typer.Option(min=1)] = None,
    snapshot_key: Annotated[str | None, typer.Option(help="New online snapshot key.")] = None,
    timestamp_key: Annotated[str | None, typer.Option(help="New online timestamp key.")] = None,
    account: AccountSpecs = [],  # noqa: B006
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Publish root version N+1: rotate root keys, replace a compromised key, change thresholds.

    The new root must be signed by a threshold of the current root keys AND of its own; every
    charger follows the chain of roots, so none is left behind.
    """
    repo = _repo(data_dir)
    uris = repo.online_key_uris()
    if snapshot_key:
        uris["snapshot"] = snapshot_key
    if timestamp_key:
        uris["timestamp"] = timestamp_key
    online = OnlineSigners(
        snapshot=_online(uris["snapshot"], Snapshot.type),
        timestamp=_online(uris["timestamp"], Timestamp.type),
    )
    current: Metadata[Root] = repo.root()
    change = RootChange(
        add_root_keys=[s.public_key for s in _owned(add_root_key, "root")],
        remove_root_keys=remove_root_key,
        root_threshold=root_threshold,
        add_targets_keys=[s.public_key for s in _owned(add_targets_key, "targets")],
        remove_targets_keys=remove_targets_key,
        targets_threshold=targets_threshold,
        snapshot_key=online.snapshot.public_key if snapshot_key else None,
        timestamp_key=online.timestamp.public_key if timestamp_key else None,
    )
    now = _now()
    root = next_root(current.signed, change, now=now)
    found = approver_keys.root_bindings(root.signed, _accounts(account))
    for uri in sign_with:
        signer = TufSigner(_signer(uri, "root key"))
        keyid = signer.public_key.keyid
        if (
            keyid
            not in root.signed.roles[Root.type].keyids + current.signed.roles[Root.type].keyids
        ):
            raise ConfigError(f"{uri} is not a root key of the current or the new root")
        root.sign(signer, append=True)
    version = repo.rotate_root(root, online, now=now)
    repo.set_online_key_uris(uris)
    _bind(
        data_dir,
        version,
        found,
        "repo.rotate_root",
        {
            "added_root": [k.keyid for k in change.add_root_keys],
            "removed_root": list(remove_root_key),
            "added_targets": [k.keyid for k in change.add_targets_keys],
            "removed_targets": list(remove_targets_key),
            "snapshot_key_replaced": bool(snapshot_key),
            "timestamp_key_replaced": bool(timestamp_key),
        },
    )
    console.print(Text(f"published root version {version}"), soft_wrap=True)
    _print_bindings(found)


@app.command("register-keys")
def register_keys(
    account: AccountSpecs = [],  # noqa: B006
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Bind the current root's targets keys to operator accounts (by owner label, or as
    --account LABEL=ACCOUNT says); keys no longer in the root are retired.  Audited."""
    root = _repo(data_dir).root().signed
    found = approver_keys.root_bindings(root, _accounts(account))
    now, who = _now(), actor()
    in_session(
        data_dir,
        lambda s: approver_keys.register(s, root.version, found, actor=who, now=now),
    )
    _print_bindings(found)


@app.command("approver-keys")
def list_approver_keys(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Which operator account holds each approver (targets) key, and since when."""
    rows = in_session(data_dir, approver_keys.list_keys)
    table = Table(title="Approver keys")
    for col in ("keyid", "label", "account", "root", "registered", "state"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.keyid[:16],
            Text(r.label),
            Text(r.account),
            str(r.root_version),
            f"{when(r.registered_at)} by {r.registered_by}",
            f"retired {when(r.retired_at)}" if r.retired_at else "in service",
        )
    console.print(table)


@app.command("propose-crl")
def propose_crl(
    crl: Annotated[Path, typer.Argument(help="CRL (DER) from `chargeward pki revoke`.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Propose a new firmware-signing CRL for the repository (approved like a release)."""
    r = ApiClient(data_dir, server).request(
        "POST",
        "/api/v1/repository/revocations",
        content=crl.read_bytes(),
        headers={"Content-Type": "application/pkix-crl"},
    )
    console.print(Text(f"proposal {r['id']}: {REVOCATION_TARGET} ({r['summary']})"), soft_wrap=True)


@app.command("approve")
def approve(
    proposal: Annotated[str, typer.Argument(help="Proposal number.")],
    key: Annotated[str, typer.Option("--key", help="Your approver (targets) key URI.")],
    crl: Annotated[Path, typer.Option(help="The CRL you reviewed; it must be the one proposed.")],
    tuf_root: Annotated[
        Path | None, typer.Option(help="Trusted TUF root.json (default: the data dir's).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Check a CRL proposal against the verified repository and sign it with your key."""
    der = crl.read_bytes()
    expected = {
        REVOCATION_TARGET: TargetFile(
            length=len(der),
            hashes={"sha256": hashlib.sha256(der).hexdigest()},
            path=REVOCATION_TARGET,
        )
    }
    summary = approve_proposal(
        ApiClient(data_dir, server),
        proposal,
        expected=expected,
        key=key,
        trusted_root=trusted_root(data_dir, tuf_root),
        title=f"Proposal {proposal}: targets you are approving",
    )
    console.print(Text(f"approved: proposal {proposal} {summary}"), soft_wrap=True)


@app.command("publish")
def publish(
    proposal: Annotated[str, typer.Argument(help="Proposal number.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Publish an approved proposal (refused below the threshold)."""
    r = ApiClient(data_dir, server).request("POST", f"/api/v1/proposals/{proposal}/publish")
    console.print(Text(f"published proposal {r['id']} ({r['kind']})"), soft_wrap=True)
