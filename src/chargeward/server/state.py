"""Everything a running server holds, handed to the API and the OCPP listener."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from chargeward.audit.log import DEFAULT_ORIGIN, open_checkpoint_key
from chargeward.crypto import load_certificates, load_signer, passphrase_from_env
from chargeward.crypto.ed25519 import MessageSigner
from chargeward.errors import ConfigError
from chargeward.limits import DEFAULT_SERVER_LIMITS, ServerLimits
from chargeward.ocpp.csms import CsmsChargePoint
from chargeward.publish import ImageRepository, OnlineSigners
from chargeward.server.cluster.cluster import Node
from chargeward.server.common.metrics import Metrics
from chargeward.server.rollout.link_budget import Budgets, Pacers
from chargeward.server.stations.csms import Registry
from chargeward.server.stations.sink import DbSink
from chargeward.server.stations.station_security import ChargerCa
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.supply.report_check import GatePolicy
from chargeward.trust.tuf_keys import TufSigner

TRUST_FILE = Path("trust") / "manufacturer-roots.pem"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class ServerState:
    data_dir: Path
    db: Database
    blobs: BlobStore
    url_key: bytes
    public_url: str
    registry: Registry = field(default_factory=Registry)
    metrics: Metrics = field(default_factory=Metrics)
    node: Node | None = None  # this process in the cluster (set by the runtime)
    reports: DbSink | None = None  # the OCPP listener's group-committed writes (runtime)
    clock: Callable[[], dt.datetime] = _utc_now
    campaign_approval_threshold: int = 100  # larger campaigns need a second person
    gate_policy: GatePolicy = field(default_factory=GatePolicy)  # what every scan report meets
    audit_origin: str = DEFAULT_ORIGIN  # the checkpoint origin line and note key name
    audit_signer: MessageSigner | None = None  # opened on first use if not set
    checkpoint_key: str | None = None  # its URI; None: <data-dir>/audit/checkpoint.key
    budgets: Budgets = field(default_factory=Budgets)  # download windows and caps per site
    pacers: Pacers = field(default_factory=Pacers)  # one bandwidth cap per site
    charger_ca: ChargerCa | None = None  # station certificates: their CA (and its key)
    limits: ServerLimits = DEFAULT_SERVER_LIMITS  # what stations and clients may send (ADR 0030)
    _signers: dict[str, TufSigner] = field(default_factory=dict)
    _target_index: tuple[int, dict[str, str]] = (0, {})

    async def station(self, station_id: str) -> CsmsChargePoint | None:
        """A connected station's commands: on this process, through another node, or None."""
        if self.node is not None:
            return await self.node.station(station_id)
        return self.registry.get(station_id)

    @property
    def repository(self) -> ImageRepository:
        return ImageRepository(self.data_dir / "tuf")

    def published_target_sha256(self, path: str) -> str | None:
        """The SHA-256 the published targets (top-level or a tenant role) list for ``path``
        (None if not listed).

        The index is rebuilt only when a new targets version is published, not per download
        (every tenant role change comes with a new top-level version, ADR 0026).
        """
        repo = self.repository
        version = repo.targets_version()
        if self._target_index[0] != version:
            listed = repo.published_targets()
            self._target_index = (
                version,
                {p: tf.hashes.get("sha256", "") for p, tf in listed.items()},
            )
        return self._target_index[1].get(path)

    def online_signers(self) -> OnlineSigners:
        """The snapshot and timestamp signers named in the repository (opened once each).

        They are looked up on every use, so a root rotation that replaces an online key takes
        effect without a restart.
        """
        uris = self.repository.online_key_uris()
        for uri in uris.values():
            if uri not in self._signers:
                self._signers[uri] = TufSigner(load_signer(uri, passphrase_from_env()))
        return OnlineSigners(
            snapshot=self._signers[uris["snapshot"]], timestamp=self._signers[uris["timestamp"]]
        )

    def checkpoint_signer(self) -> MessageSigner:
        """The audit checkpoint key: ``checkpoint_key``, else ``<data-dir>/audit/checkpoint.key``
        (made on first use)."""
        if self.audit_signer is None:
            self.audit_signer = open_checkpoint_key(
                self.data_dir, passphrase_from_env(), self.checkpoint_key
            )
        return self.audit_signer

    def manufacturer_roots(self) -> list[x509.Certificate]:
        path = self.data_dir / TRUST_FILE
        if not path.exists():
            raise ConfigError(
                "no Manufacturer Root CA configured: start the server with --manufacturer-root"
            )
        return load_certificates(path.read_bytes())
