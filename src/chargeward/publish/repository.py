"""The TUF image repository on disk (python-tuf Metadata API, consistent snapshots).

::

    <dir>/metadata/1.root.json ... N.root.json, root.json (the newest root)
    <dir>/metadata/N.targets.json, N.snapshot.json, timestamp.json
    <dir>/metadata/N.tenant-<id>.json  a customer's delegated targets role (ADR 0026)
    <dir>/online-keys.json         key URIs of the online roles (snapshot, timestamp)

Target files are not copied here: the server serves ``/tuf/targets/<dir>/<sha256>.<name>``
from its content-addressed blob store.  Writes follow the TUF publish order (targets, then
snapshot, then timestamp last), each file atomically, under a lock shared by every process
that writes the repository (the server and offline ``chargeward repo`` commands).

    repo = ImageRepository(data_dir / "tuf")
    proposal = repo.propose({path: target_file}, now=now)
    repo.publish_targets(signed_proposal, online, now=now)

Customer-locked targets (``tenants/<id>/...``) live in a delegated targets role per customer
(``tenant-<id>``), signed by the same approver keys and threshold as the top-level targets,
in the same proposal: :meth:`ImageRepository.propose_files` returns the top-level targets
and every tenant role, each re-signed (next version, renewed expiry) by every proposal, so
the snapshot's role versions move together and show no customer's release.  Customer-locked
targets an older version listed publicly are moved into their tenant role by the next
proposal (ADR 0026).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer as SslibSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError

from chargeward.errors import ConfigError, Conflict, NotFound, TrustError
from chargeward.fileio import replace_file
from chargeward.model.targets import (
    REVOCATION_TARGET,
    TENANT_ROLE_PREFIX,
    tenant_of_path,
    tenant_path,
)
from chargeward.publish.expiry import ExpiryPolicy, expiry_after, utc_iso
from chargeward.publish.tenant_roles import (
    custom_customer,
    is_tenant_role,
    tenant_delegations,
    tenant_role_of_id,
)
from chargeward.trust.tuf_keys import check_root_people

ISSUED_FIELD = "x-chargeward-issued"
ONLINE_KEYS_FILE = "online-keys.json"
LOG = logging.getLogger("chargeward.publish")
ONLINE_ROLES = (Snapshot.type, Timestamp.type)
_THREAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class OnlineSigners:
    snapshot: SslibSigner
    timestamp: SslibSigner


@dataclass(frozen=True)
class ProposedFiles:
    """The role files one proposal changes: the top-level targets and every tenant role
    (``tenant-<id>`` name to metadata), all to be signed by a threshold of approvers."""

    targets: Metadata[Targets]
    roles: dict[str, Metadata[Targets]]


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: dt.datetime
    keys: int
    threshold: int
    warning: str | None


def _check_signer_is(root: Root, role: str, signer: SslibSigner) -> None:
    if signer.public_key.keyid not in root.roles[role].keyids:
        raise ConfigError(
            f"the configured {role} key ({signer.public_key.keyid[:12]}) is not the {role} key "
            "named in the root metadata"
        )


class ImageRepository:
    def __init__(self, directory: Path, policy: ExpiryPolicy | None = None) -> None:
        self.directory = directory
        self.metadata_dir = directory / "metadata"
        self.policy = policy or ExpiryPolicy()

    # -- reading ----------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.metadata_dir / "timestamp.json").exists()

    def _read(self, name: str, cls: type[Signed]) -> Metadata[Any]:
        path = self.metadata_dir / name
        try:
            md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError as e:
            raise NotFound(
                f"no TUF repository metadata {name} in {self.metadata_dir} "
                "(run `chargeward repo init` first)"
            ) from e
        except DeserializationError as e:
            raise ConfigError(f"repository metadata {path} is damaged: {e}") from e
        if not isinstance(md.signed, cls):
            raise ConfigError(f"{path} does not hold {cls.type} metadata")
        return md

    def root(self) -> Metadata[Root]:
        return self._read("root.json", Root)

    def timestamp(self) -> Metadata[Timestamp]:
        return self._read("timestamp.json", Timestamp)

    def snapshot(self) -> Metadata[Snapshot]:
        version = self.timestamp().signed.snapshot_meta.version
        return self._read(f"{version}.snapshot.json", Snapshot)

    def targets_version(self) -> int:
        """The published targets version (from timestamp and snapshot, both small)."""
        return self.snapshot().signed.meta[f"{Targets.type}.json"].version

    def targets(self) -> Metadata[Targets]:
        return self._read(f"{self.targets_version()}.targets.json", Targets)

    def role_versions(self) -> dict[str, int]:
        """The published version of every delegated role (from the snapshot)."""
        meta = self.snapshot().signed.meta
        return {
            name.removesuffix(".json"): m.version
            for name, m in meta.items()
            if name != f"{Targets.type}.json"
        }

    def delegated(self, role: str, version: int | None = None) -> Metadata[Targets]:
        """The published metadata of delegated ``role`` (or of its ``version``)."""
        if version is None:
            version = self.role_versions().get(role)
            if version is None:
                raise NotFound(f"no delegated role {role!r}")
        return self._read(f"{version}.{role}.json", Targets)

    def published_targets(self) -> dict[str, TargetFile]:
        """Every published target: the top-level ones and those of every delegated role."""
        out = dict(self.targets().signed.targets)
        for role, version in self.role_versions().items():
            out.update(self.delegated(role, version).signed.targets)
        return out

    def metadata_file(self, name: str) -> Path:
        """The file served at ``/tuf/metadata/<name>`` (only names python-tuf asks for)."""
        if "/" in name or name.startswith(".") or not name.endswith(".json"):
            raise NotFound(f"no metadata {name!r}")
        path = self.metadata_dir / name
        if not path.is_file():
            raise NotFound(f"no metadata {name!r}")
        return path

    def online_key_uris(self) -> dict[str, str]:
        try:
            data = json.loads((self.directory / ONLINE_KEYS_FILE).read_text())
        except FileNotFoundError as e:
            raise NotFound("the repository has no online keys configured") from e
        except ValueError as e:
            raise ConfigError(f"{self.directory / ONLINE_KEYS_FILE} is damaged") from e
        if not isinstance(data, dict) or not all(
            isinstance(data.get(r), str) for r in ONLINE_ROLES
        ):
            raise ConfigError(
                f"{self.directory / ONLINE_KEYS_FILE} must name snapshot and timestamp"
            )
        return {r: data[r] for r in ONLINE_ROLES}

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with _THREAD_LOCK, open(self.directory / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write(self, name: str, md: Metadata[Any]) -> None:
        replace_file(self.metadata_dir / name, md.to_bytes())

    def set_online_key_uris(self, uris: Mapping[str, str]) -> None:
        data = {r: uris[r] for r in ONLINE_ROLES}
        with self._locked():
            replace_file(self.directory / ONLINE_KEYS_FILE, json.dumps(data, indent=2).encode())

    def initialize(
        self,
        root: Metadata[Root],
        targets: Metadata[Targets],
        online: OnlineSigners,
        *,
        now: dt.datetime,
    ) -> None:
        """Write the first root, targets, snapshot and timestamp; refuses to overwrite."""
        with self._locked():
            if (self.metadata_dir / "1.root.json").exists():
                raise Conflict(f"a TUF repository already exists in {self.directory}")
            if root.signed.version != 1 or targets.signed.version != 1:
                raise ConfigError("a new repository starts at root and targets version 1")
            check_root_people(root.signed)
            if (why := self.policy.check_targets_expiry(targets.signed.expires, now)) is not None:
                raise ConfigError(f"cannot initialise the repository with these targets: {why}")
            try:
                root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
                root.signed.verify_delegate(Targets.type, targets.signed_bytes, targets.signatures)
            except UnsignedMetadataError as e:
                raise TrustError(f"cannot initialise the repository: {e}") from e
            for role in ONLINE_ROLES:
                _check_signer_is(root.signed, role, getattr(online, role))
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            self._write("1.root.json", root)
            self._write("root.json", root)
            self._write("1.targets.json", targets)
            self._publish_online(root.signed, online, now, targets_version=1, snapshot_version=1)

    def _publish_online(
        self,
        root: Root,
        online: OnlineSigners,
        now: dt.datetime,
        *,
        targets_version: int,
        snapshot_version: int,
        timestamp_version: int = 1,
        roles: Mapping[str, int] | None = None,
    ) -> None:
        """Write snapshot ``snapshot_version`` (listing the delegated ``roles`` and their
        versions too) then the timestamp (TUF publish order)."""
        for role in ONLINE_ROLES:
            _check_signer_is(root, role, getattr(online, role))
        meta = {f"{Targets.type}.json": MetaFile(version=targets_version)}
        for name, version in sorted((roles or {}).items()):
            meta[f"{name}.json"] = MetaFile(version=version)
        snapshot = Metadata(
            Snapshot(
                version=snapshot_version,
                expires=expiry_after(now, self.policy.snapshot),
                meta=meta,
            )
        )
        snapshot.sign(online.snapshot)
        self._write(f"{snapshot_version}.snapshot.json", snapshot)
        self._write_timestamp(online, now, snapshot_version, timestamp_version)

    def _write_timestamp(
        self, online: OnlineSigners, now: dt.datetime, snapshot_version: int, version: int
    ) -> None:
        timestamp = Metadata(
            Timestamp(
                version=version,
                expires=expiry_after(now, self.policy.timestamp),
                snapshot_meta=MetaFile(version=snapshot_version),
                unrecognized_fields={ISSUED_FIELD: utc_iso(now)},
            )
        )
        timestamp.sign(online.timestamp)
        self._write("timestamp.json", timestamp)

    def _next_online(
        self,
        root: Root,
        online: OnlineSigners,
        now: dt.datetime,
        *,
        targets_version: int | None = None,
        roles: Mapping[str, int] | None = None,
    ) -> None:
        ts = self.timestamp().signed
        snap = self.snapshot().signed
        if targets_version is None:
            targets_version = snap.meta[f"{Targets.type}.json"].version
        self._publish_online(
            root,
            online,
            now,
            targets_version=targets_version,
            snapshot_version=snap.version + 1,
            timestamp_version=ts.version + 1,
            roles={**self.role_versions(), **(roles or {})},
        )

    def propose(
        self, additions: Mapping[str, TargetFile], *, now: dt.datetime
    ) -> Metadata[Targets]:
        """The next top-level targets metadata, for a repository without tenant roles (see
        :meth:`propose_files`, which the server uses)."""
        files = self.propose_files(additions, now=now)
        if files.roles:
            raise Conflict("this change also changes tenant roles: use propose_files")
        return files.targets

    def propose_files(
        self, additions: Mapping[str, TargetFile], *, now: dt.datetime
    ) -> ProposedFiles:
        """The next targets metadata: what is published plus ``additions`` (unsigned).

        Public targets go into the top-level targets, customer-locked ones
        (``tenants/<id>/...``) into the ``tenant-<id>`` delegated role, delegated from the
        top-level targets to the root's approver keys and threshold for that prefix only.
        Every tenant role is re-signed (next version, renewed expiry) with every proposal.
        A customer-locked target an older version listed publicly moves into its tenant role
        (under its tenant path).  A path that is already published may only be listed again
        with identical contents.
        """
        root = self.root().signed
        current = self.targets().signed
        published_roles = self.role_versions()
        top = dict(current.targets)
        tenants: dict[str, dict[str, TargetFile]] = {}
        versions: dict[str, int] = {}
        for role, version in published_roles.items():
            if is_tenant_role(role):
                tenants[role.removeprefix(TENANT_ROLE_PREFIX)] = dict(
                    self.delegated(role, version).signed.targets
                )
                versions[role] = version
        for path, tf in list(top.items()):  # the migration of a public customer-locked target
            customer = custom_customer(tf)
            if customer is not None and tenant_of_path(path) is None:
                del top[path]
                moved = tenant_path(customer, path)
                tf = TargetFile(tf.length, tf.hashes, moved, dict(tf.unrecognized_fields))
                tenants.setdefault(moved.split("/")[1], {})[moved] = tf
        for path, new in additions.items():
            tid = tenant_of_path(path)
            listed = top if tid is None else tenants.setdefault(tid, {})
            old = listed.get(path)
            replaceable = path == REVOCATION_TARGET  # a newer CRL replaces the old one
            if (
                old is not None
                and not replaceable
                and (old.length, old.hashes) != (new.length, new.hashes)
            ):
                raise Conflict(f"{path} is already published with different contents")
            listed[path] = new
        expires = expiry_after(now, self.policy.targets)
        delegations = tenant_delegations(root, current.delegations, sorted(tenants))
        roles = {
            tenant_role_of_id(tid): Metadata(
                Targets(
                    version=versions.get(tenant_role_of_id(tid), 0) + 1,
                    expires=expires,
                    targets=dict(sorted(listed.items())),
                )
            )
            for tid, listed in sorted(tenants.items())
        }
        targets = Metadata(
            Targets(
                version=current.version + 1,
                expires=expires,
                targets=top,
                delegations=delegations,
                unrecognized_fields=dict(current.unrecognized_fields),
            )
        )
        return ProposedFiles(targets, roles)

    def publish_targets(
        self,
        targets: Metadata[Targets],
        online: OnlineSigners,
        *,
        now: dt.datetime,
        roles: Mapping[str, Metadata[Targets]] | None = None,
    ) -> int:
        """Publish threshold-signed targets metadata and the delegated ``roles`` it changes
        (each threshold-signed as its delegation says); returns the new targets version."""
        with self._locked():
            root = self.root().signed
            current = self.targets().signed.version
            version = targets.signed.version
            if version != current + 1:
                raise Conflict(
                    f"the repository moved on (targets version {current}) since this proposal "
                    f"(version {version}) was made: it must be proposed and approved again"
                )
            why = self.policy.check_targets_expiry(targets.signed.expires, now)
            if why is not None:
                raise Conflict(
                    f"cannot publish targets version {version}: {why}; "
                    "it must be proposed and approved again"
                )
            try:
                root.verify_delegate(Targets.type, targets.signed_bytes, targets.signatures)
            except UnsignedMetadataError as e:
                raise Conflict(f"cannot publish: {e}") from e
            roles = dict(roles or {})
            self._check_roles(targets.signed, roles, now)
            for name, md in sorted(roles.items()):  # delegated roles before their delegator
                self._write(f"{md.signed.version}.{name}.json", md)
            self._write(f"{version}.targets.json", targets)
            self._next_online(
                root,
                online,
                now,
                targets_version=version,
                roles={n: md.signed.version for n, md in roles.items()},
            )
            self._withdraw_public_customer_targets(version)
            return version

    def _withdraw_public_customer_targets(self, current: int) -> list[str]:
        """Remove earlier top-level targets versions that listed customer-locked targets in
        public (published before ADR 0026), once ``current`` no longer does: a TUF client only
        fetches the version the snapshot names, so nobody needs them, and they would tell an
        anonymous caller every customer's releases."""
        if any(custom_customer(tf) for tf in self.targets().signed.targets.values()):
            return []  # the current version still lists them: not moved yet
        removed = []
        for path in sorted(self.metadata_dir.glob("*.targets.json")):
            number = path.name.split(".", 1)[0]
            if not (number.isascii() and number.isdigit()) or int(number) >= current:
                continue
            listed = Metadata[Targets].from_bytes(path.read_bytes()).signed.targets
            if any(custom_customer(tf) for tf in listed.values()):
                path.unlink()
                removed.append(path.name)
        if removed:
            LOG.info(
                "withdrew %d earlier targets version(s) listing customers' releases in public: %s",
                len(removed),
                ", ".join(removed),
            )
        return removed

    def _check_roles(
        self, top: Targets, roles: Mapping[str, Metadata[Targets]], now: dt.datetime
    ) -> None:
        """Every tenant role the new top-level targets delegate is published with it, as the
        next version of the published one, in policy, threshold-signed per its delegation."""
        delegated = set((top.delegations.roles or {}) if top.delegations else {})
        published = self.role_versions()
        tenant = {n for n in delegated if is_tenant_role(n)}
        if set(roles) != tenant:
            raise Conflict(
                "cannot publish: the proposal must carry exactly the tenant roles the targets "
                f"delegate ({len(tenant)}), not {len(roles)}"
            )
        for name in delegated - tenant:
            if name not in published:
                raise Conflict(f"cannot publish: delegated role {name} is not published")
        for name, md in roles.items():
            want = published.get(name, 0) + 1
            if md.signed.version != want:
                raise Conflict(
                    f"the repository moved on since this proposal was made ({name} version "
                    f"{md.signed.version}, expected {want}): it must be proposed again"
                )
            if (why := self.policy.check_targets_expiry(md.signed.expires, now)) is not None:
                raise Conflict(f"cannot publish {name} version {md.signed.version}: {why}")
            try:
                top.verify_delegate(name, md.signed_bytes, md.signatures)
            except UnsignedMetadataError as e:
                raise Conflict(f"cannot publish {name}: {e}") from e
            prefix = f"tenants/{name.removeprefix(TENANT_ROLE_PREFIX)}/"
            stray = [p for p in md.signed.targets if not p.startswith(prefix)]
            if stray:
                raise Conflict(f"cannot publish {name}: it lists {stray[0]} outside its prefix")

    def rotate_root(
        self, new_root: Metadata[Root], online: OnlineSigners, *, now: dt.datetime
    ) -> int:
        """Install root N+1, signed by a threshold of the old root keys and of its own."""
        with self._locked():
            old = self.root()
            version = new_root.signed.version
            if version != old.signed.version + 1:
                raise Conflict(f"new root must be version {old.signed.version + 1}, got {version}")
            try:
                old.signed.verify_delegate(Root.type, new_root.signed_bytes, new_root.signatures)
            except UnsignedMetadataError as e:
                raise TrustError(f"new root is not signed by the current root keys: {e}") from e
            try:
                new_root.signed.verify_delegate(
                    Root.type, new_root.signed_bytes, new_root.signatures
                )
            except UnsignedMetadataError as e:
                raise TrustError(f"new root is not signed by its own root keys: {e}") from e
            check_root_people(new_root.signed)  # keys equal people: chargers count keys
            for role in ONLINE_ROLES:  # check before anything is written
                _check_signer_is(new_root.signed, role, getattr(online, role))
            self._write(f"{version}.root.json", new_root)
            self._write("root.json", new_root)
            # Online keys may have changed: re-sign snapshot and timestamp with the new ones.
            self._next_online(new_root.signed, online, now)
            return version

    def refresh_online(self, online: OnlineSigners, *, now: dt.datetime) -> list[str]:
        """Re-sign timestamp (and snapshot) before they expire; returns the roles re-signed."""
        if not self.initialized:
            return []
        with self._locked():
            root = self.root().signed
            ts = self.timestamp().signed
            snap = self.snapshot().signed
            if snap.expires - now < self.policy.snapshot_renew:
                self._next_online(root, online, now)
                return [Snapshot.type, Timestamp.type]
            if ts.expires - now < self.policy.timestamp_renew:
                _check_signer_is(root, Timestamp.type, online.timestamp)
                self._write_timestamp(online, now, snap.version, ts.version + 1)
                return [Timestamp.type]
            return []

    def status(self, *, now: dt.datetime) -> list[RoleStatus]:
        """Version and expiry of every top-level role, with a warning when expiry is near."""
        root = self.root().signed
        roles: list[tuple[str, Signed]] = [
            (Root.type, root),
            (Targets.type, self.targets().signed),
            (Snapshot.type, self.snapshot().signed),
            (Timestamp.type, self.timestamp().signed),
        ]
        out = []
        for name, signed in roles:
            left = signed.expires - now
            warning = None
            if left <= dt.timedelta(0):
                warning = "EXPIRED: every charger refuses updates until it is re-signed"
            elif name in (Root.type, Targets.type) and left < self.policy.offline_warning:
                warning = f"expires in {left.days} days: re-sign it with the offline keys"
            elif name in ONLINE_ROLES and left < getattr(self.policy, f"{name}_renew"):
                warning = "due for renewal: is the server running?"
            role = root.roles[name]
            out.append(
                RoleStatus(
                    name, signed.version, signed.expires, len(role.keyids), role.threshold, warning
                )
            )
        return out
