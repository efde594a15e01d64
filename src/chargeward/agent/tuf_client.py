"""The charger's TUF client: python-tuf's ``Updater`` over httpx, with every error mapped.

All I/O around the repository lives here; the decisions are in :mod:`~chargeward.agent.verify`
and :mod:`~chargeward.agent.freshness`.  Calls block: the agent runs them in a thread.

    state = StateDir(Path("charger-1"))
    client = RepositoryClient(state, "http://127.0.0.1:8080/tuf/")
    info = client.target("firmware/AC22/1.1.0/main.cwfw")
    listed = client.firmware_targets("AC22")
    got = client.read(lambda repo: repo.target(path))
    got.value, got.crl  # the TargetFile; the listed CRL's DER bytes

:meth:`RepositoryClient.read` also fetches the firmware-signing CRL when the verified targets
list it (``revocation/firmware-signing.crl``), so every refresh the agent makes brings the
charger's revocation list up to date; applying it is :mod:`~chargeward.agent.certificates`'s
decision, not this module's.

Each call refreshes the repository with a new ``Updater`` (one refresh per Updater), bootstrapped
with the root shipped at manufacture; the metadata cache in ``secure/tuf/metadata/`` keeps the
newer roots of later rotations (``root_history/``), which the Updater loads and verifies in
order before anything else, so a rotated root always wins over the bootstrap.  Errors:
:class:`~chargeward.errors.RepositoryRefused` (a trust decision, with a reason code) or
:class:`~chargeward.errors.TransportError` (the repository could not be reached: retry later).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib import parse

from tuf.api import exceptions
from tuf.api.metadata import Metadata, Root, Snapshot, T, TargetFile, Targets, Timestamp
from tuf.ngclient import Updater

from chargeward.agent.freshness import check_clock, check_unexpired, issued_at, next_time_floor
from chargeward.agent.state import StateDir
from chargeward.agent.tuf_fetcher import HttpxFetcher, RepositoryLimits
from chargeward.errors import ChargewardError, ConfigError, RepositoryRefused, TransportError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.targets import (
    FIRMWARE_PREFIX,
    REVOCATION_TARGET,
    tenant_path,
    tenant_role,
)

__all__ = [
    "Refreshed",
    "RepositoryClient",
    "RepositoryLimits",
    "RepositoryView",
    "read_verified",
    "refusal",
]
LOG = logging.getLogger("chargeward.agent.tuf")
R = TypeVar("R")


def refusal(e: Exception) -> ChargewardError:
    """The Chargeward error for an exception out of python-tuf (or the fetcher, or the disk)."""
    text = str(e) or type(e).__name__
    if e.__cause__ is not None:
        text = f"{text} ({e.__cause__})"
    if isinstance(e, exceptions.DownloadLengthMismatchError):
        reason = "oversized"
    elif isinstance(e, exceptions.DownloadError):
        return TransportError(f"TUF repository unreachable: {text}")
    elif isinstance(e, OSError):
        return TransportError(f"TUF metadata cache not usable: {text}")
    elif isinstance(e, exceptions.ExpiredMetadataError):
        reason = "expired"
    elif isinstance(e, exceptions.BadVersionNumberError):
        reason = "rollback"
    elif isinstance(e, exceptions.UnsignedMetadataError):
        reason = "unsigned"
    elif isinstance(e, exceptions.LengthOrHashMismatchError):
        reason = "length" if text.startswith("Observed length") else "hash"
    else:
        reason = "repository"
    return RepositoryRefused(reason, text)


_TUF_ERRORS = (exceptions.RepositoryError, exceptions.DownloadError, OSError)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except _TUF_ERRORS as e:
        raise refusal(e) from e


class RepositoryView:
    """The repository as one successful refresh verified it."""

    def __init__(
        self,
        updater: Updater,
        metadata_dir: Path,
        now: dt.datetime,
        targets_dir: Path | None = None,
        customer: str | None = None,
    ) -> None:
        self._customer = customer
        self._updater = updater
        self._dir = metadata_dir
        self._now = now
        self._targets_dir = targets_dir or metadata_dir.parent / "targets"

    def target(self, path: str) -> TargetFile | None:
        """The verified ``TargetFile`` for ``path`` (walking delegations), or None.

        For a charger of a customer, a firmware path is looked up in the customer's tenant
        role first (``tenants/<id>/firmware/...``, ADR 0026), then publicly.
        """
        with _mapped():
            if self._customer is not None and path.startswith(FIRMWARE_PREFIX):
                found = self._updater.get_targetinfo(tenant_path(self._customer, path))
                if found is not None:
                    return found
            return self._updater.get_targetinfo(path)

    def download(self, path: str, max_length: int) -> bytes | None:
        """The verified content of target ``path``, or None when the repository lists none.

        Kept in the targets directory (``secure/tuf/targets/``) and downloaded again only when
        the listed length or hashes change.  A target listed longer than ``max_length`` is
        refused (``oversized``) before any byte is fetched; the Updater caps the download at
        the listed length and the fetcher at :attr:`RepositoryLimits.max_download`.
        """
        info = self.target(path)
        if info is None:
            return None
        if info.length > max_length:
            raise RepositoryRefused(
                "oversized", f"{path} is listed with {info.length} bytes (at most {max_length})"
            )
        local = str(self._targets_dir / parse.quote(path, ""))
        with _mapped():
            cached = self._updater.find_cached_target(info, local)
            if cached is None:
                self._targets_dir.mkdir(parents=True, exist_ok=True)
                cached = self._updater.download_target(info, local)
                LOG.debug("downloaded %s (%d bytes)", path, info.length)
            return Path(cached).read_bytes()

    def download_to(self, info: TargetFile, dest: Path, max_length: int) -> None:
        """Download the listed target ``info`` into ``dest``; python-tuf checks its length and
        hashes against the verified metadata (``RepositoryRefused`` ``length``/``hash``).

        A target listed longer than ``max_length`` is refused (``oversized``) before any byte
        is fetched.
        """
        if info.length > max_length:
            raise RepositoryRefused(
                "oversized",
                f"{info.path} is listed with {info.length} bytes (at most {max_length})",
            )
        with _mapped():
            self._updater.download_target(info, str(dest))
        LOG.debug("downloaded %s (%d bytes)", info.path, info.length)

    def revocation_list(self) -> bytes | None:
        """The DER firmware-signing CRL the repository lists (``revocation/...crl``), or None.

        Only TUF-verified bytes: whether the CRL itself is acceptable is decided by
        :func:`chargeward.agent.certificates.apply_crl`.
        """
        return self.download(REVOCATION_TARGET, DEFAULT_FORMAT_LIMITS.crl_bytes)

    def firmware_targets(self, model: str) -> dict[str, TargetFile]:
        """Every target listed under ``firmware/<model>/``, each confirmed by the Updater.

        ngclient has no listing: candidate paths come from the verified top-level targets
        metadata and the ``model-<model>`` delegated role the Updater persisted; the answer for
        each candidate is the Updater's own ``get_targetinfo``.
        """
        prefix = f"{FIRMWARE_PREFIX}{model}/"
        top = read_verified(self._dir, Targets.type, Targets)
        candidates = {p for p in top.targets if p.startswith(prefix)}
        if self._customer is not None and top.delegations is not None:
            role = tenant_role(self._customer)
            if role in (top.delegations.roles or {}):
                mine = tenant_path(self._customer, prefix)
                with _mapped():  # walks into (and loads) the tenant role
                    self._updater.get_targetinfo(f"{mine}0/probe.cwfw")
                delegated = self._current_delegated(role)
                if delegated is not None:
                    check_unexpired({role: delegated}, self._now)
                    candidates |= {p for p in delegated.targets if p.startswith(mine)}
        role = f"model-{model}"
        if top.delegations is not None and role in (top.delegations.roles or {}):
            self.target(f"{prefix}0/probe.cwfw")  # walks into (and loads) the delegated role
            delegated = self._current_delegated(role)
            if delegated is not None:
                check_unexpired({role: delegated}, self._now)
                candidates |= {p for p in delegated.targets if p.startswith(prefix)}
        found: dict[str, TargetFile] = {}
        for path in sorted(candidates):
            with _mapped():
                info = self._updater.get_targetinfo(path)
            if info is not None:
                found[path] = info
        return found

    def _current_delegated(self, role: str) -> Targets | None:
        """The persisted ``role`` metadata, if it is the version the verified snapshot names."""
        if not (self._dir / f"{parse.quote(role, '')}.json").exists():
            return None
        meta = read_verified(self._dir, Snapshot.type, Snapshot).meta.get(f"{role}.json")
        delegated = read_verified(self._dir, role, Targets)
        return delegated if meta is not None and meta.version == delegated.version else None


def read_verified(metadata_dir: Path, role: str, kind: type[T]) -> T:
    """Metadata the Updater verified and persisted in ``metadata_dir`` during a refresh."""
    with _mapped():
        md = Metadata[T].from_file(str(metadata_dir / f"{parse.quote(role, '')}.json"))
    if not isinstance(md.signed, kind):
        raise RepositoryRefused("repository", f"{role}.json holds {md.signed.type} metadata")
    return md.signed


class RepositoryClient:
    """Refresh the charger's view of the TUF repository at ``base_url``.

    ``base_url`` serves ``metadata/`` and ``targets/``; ``clock`` is the charger's clock,
    checked against the time floor before every refresh and raised after each one.
    """

    def __init__(
        self,
        state: StateDir,
        base_url: str,
        *,
        limits: RepositoryLimits | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        customer: str | None = None,
        auth: Callable[[], tuple[str, str] | None] | None = None,
    ) -> None:
        bootstrap = state.tuf_bootstrap_root()
        if bootstrap is None:
            raise ConfigError(f"{state.root} holds no TUF root (chargeward agent init --tuf-root)")
        if parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ConfigError(f"TUF repository URL must be http(s)://...: {base_url!r}")
        self.state = state
        self.base_url = base_url.rstrip("/") + "/"
        self.limits = limits or RepositoryLimits()
        self.targets_dir = state.secure / "tuf" / "targets"  # verified target files (the CRL)
        self._bootstrap = bootstrap
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        # The charger's customer (its tenant role, ADR 0026) and its credentials for the
        # repository (station id and BasicAuthPassword, read at every refresh: rotated ones).
        self.customer = customer
        self._auth = auth or (lambda: None)

    @contextlib.contextmanager
    def refresh(self) -> Iterator[RepositoryView]:
        """Refresh once; the view is valid inside the ``with`` block."""
        now = self._clock()
        tolerance = dt.timedelta(seconds=self.limits.clock_tolerance)
        floor = self.state.time_floor()
        check_clock(now, floor, tolerance)
        fetcher = HttpxFetcher(
            self.limits,
            targets_url=self.base_url + "targets/",
            auth=self._auth(),
            csms_roots=self.state.csms_roots_pem(),
        )
        try:
            with _mapped():  # a failing disk is TransportError too: retry later
                metadata_dir = self.state.tuf_metadata_dir
                updater = Updater(
                    str(metadata_dir),
                    self.base_url + "metadata/",
                    target_base_url=self.base_url + "targets/",
                    fetcher=fetcher,
                    config=self.limits.updater_config(),
                    bootstrap=self._bootstrap,
                )
                updater.refresh()
            timestamp = read_verified(metadata_dir, Timestamp.type, Timestamp)
            check_unexpired(
                {
                    Root.type: read_verified(metadata_dir, Root.type, Root),
                    Timestamp.type: timestamp,
                    Snapshot.type: read_verified(metadata_dir, Snapshot.type, Snapshot),
                    Targets.type: read_verified(metadata_dir, Targets.type, Targets),
                },
                now,
            )
            new_floor = next_time_floor(floor, issued_at(timestamp), now, tolerance)
            with _mapped():
                raised = self.state.raise_time_floor(new_floor)
            LOG.debug(
                "repository refreshed: timestamp v%d, time floor %s", timestamp.version, raised
            )
            yield RepositoryView(updater, metadata_dir, now, self.targets_dir, self.customer)
        finally:
            fetcher.close()

    def target(self, path: str) -> TargetFile | None:
        """Refresh, then look up one target path."""
        with self.refresh() as repo:
            return repo.target(path)

    def firmware_targets(self, model: str) -> dict[str, TargetFile]:
        """Refresh, then list the firmware targets for ``model`` (see RepositoryView)."""
        with self.refresh() as repo:
            return repo.firmware_targets(model)

    def read(self, what: Callable[[RepositoryView], R]) -> Refreshed[R]:
        """Refresh, call ``what`` on the view, and fetch the listed CRL in the same refresh.

        A CRL the repository lists but cannot deliver intact fails the refresh like any other
        target (``RepositoryRefused`` with ``hash``, ``length`` or ``oversized``; a
        ``TransportError`` when unreachable): the charger never decides with a revocation list
        older than the one its verified metadata names.
        """
        with self.refresh() as repo:
            value = what(repo)
            return Refreshed(value, repo.revocation_list())


@dataclass(frozen=True)
class Refreshed(Generic[R]):
    """What :meth:`RepositoryClient.read` found in one refresh.

    ``crl`` holds the TUF-verified DER bytes of the listed firmware-signing CRL, or None.
    """

    value: R
    crl: bytes | None
