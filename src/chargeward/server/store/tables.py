"""Database tables (SQLAlchemy 2, typed).  Rows are storage, not the domain: routes and
OCPP handlers go through the services of the sub-packages above the store
(docs/adr/0029-server-sub-packages.md).

The declarative base is :mod:`chargeward.storage.base`; the audit log owns its tables
(:mod:`chargeward.audit.tables`), imported here so that ``Base.metadata`` (the migrations'
target, the schema tests) holds the whole schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from chargeward.audit import tables as audit_tables
from chargeward.server.store import cluster_tables, integration_tables, proxy_tables, vendor_tables
from chargeward.storage.base import Base

AUDIT_TABLES = (
    audit_tables.AuditEntry,
    audit_tables.AuditNode,
    audit_tables.AuditTreeHead,
    audit_tables.AuditCheckpoint,
    audit_tables.AuditQueued,
)
CLUSTER_TABLES = (  # several nodes on one PostgreSQL database
    cluster_tables.ClusterNode,
    cluster_tables.ClusterLeader,
    cluster_tables.StationPresence,
    cluster_tables.StationCommand,
)
VENDOR_TABLES = (vendor_tables.VendorRoot, vendor_tables.VendorRelease)  # ADR 0041
PROXY_TABLES = (proxy_tables.StationUpstream, proxy_tables.SiteUpstream)  # ADR 0040
INTEGRATION_TABLES = (integration_tables.StationDelivery, integration_tables.IntegrationEvent)
# Every table, the audit log's included: what the migrations build and the schema tests check.
SCHEMA = Base.metadata


class Station(Base):
    __tablename__ = "stations"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(20))
    vendor: Mapped[str | None] = mapped_column(String(50))
    serial_number: Mapped[str | None] = mapped_column(String(25))
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    connected: Mapped[bool] = mapped_column(default=False)
    last_seen: Mapped[dt.datetime | None]
    last_boot_reason: Mapped[str | None] = mapped_column(String(30))
    connector_status: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime]
    # The newest security release the station reported as available to it (DataTransfer).
    available_update: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Set by a factory import (POST /api/v1/stations/import): the customer lock and the
    # SHA-256 fingerprint of the device certificate issued at provisioning.
    customer: Mapped[str | None] = mapped_column(String(64), default=None)
    # Fleet registry (server/fleet.py): where it stands, what it is, what it should run.
    site_id: Mapped[str | None] = mapped_column(String(48), default=None, index=True)
    hardware_revision: Mapped[str | None] = mapped_column(String(32), default=None)
    manufactured_on: Mapped[dt.date | None] = mapped_column(default=None)
    # {component: version}; the BootNotification firmwareVersion is component "main".
    reported_firmware: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    expected_firmware: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    device_certificate_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    # OCPP security profile the station must connect with (1 lab only, 2 TLS + Basic, 3 mTLS)
    # and the expiry of its current station certificate (profile 3 / A02 renewal).
    security_profile: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    certificate_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    certificate_serial: Mapped[str | None] = mapped_column(String(40), default=None)
    # The current station certificate is (issuer, serial): SHA-256 of the DER issuer name and
    # the hex serial; only it is accepted (ADR 0022).  The pending one was issued for a CSR
    # (A02) and becomes current when the station accepts it or logs in with it.
    certificate_issuer: Mapped[str | None] = mapped_column(String(64), default=None)
    pending_certificate_serial: Mapped[str | None] = mapped_column(String(40), default=None)
    pending_certificate_issuer: Mapped[str | None] = mapped_column(String(64), default=None)
    pending_certificate_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # When the CSMS asked the station for a CSR (TriggerMessage, A02); one CSR is signed per
    # request, and none without one (ADR 0027).
    certificate_requested_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # BasicAuthPassword rotation: the new hash while the station's answer is outstanding.
    pending_password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    # Transactions running now, {evse id: transaction id} (TransactionEvent, OCPP E01): the
    # campaign planner never dispatches to a station with one (L01.FR.06).
    active_transactions: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # The live campaign the station is in (None: none), so a report from a station outside
    # every campaign costs no campaign lookup (a reconnect storm is mostly such reports).
    campaign_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # The last MeterValues per EVSE, {evse id: {"timestamp", "sampled_value"}}, and the last
    # complete NotifyReport device model (bounded by ServerLimits; ADR 0035).
    meter_values: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    device_model: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # ADR 0039: last subprotocol; operator's plain-UpdateFirmware mark; SignedUpdateFirmware seen
    ocpp_version: Mapped[str | None] = mapped_column(String(8), default=None)  # 1.6 | 2.0.1
    legacy_firmware_update: Mapped[bool] = mapped_column(default=False)
    signed_update_support: Mapped[bool | None] = mapped_column(default=None)  # None: unknown


class Release(Base):
    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # manifest SHA-256
    version: Mapped[str] = mapped_column(String(50))
    security_version: Mapped[int] = mapped_column(BigInteger)
    hardware_models: Mapped[dict[str, Any]] = mapped_column()  # {"models": [...]}
    signing_certificate_pem: Mapped[str] = mapped_column(Text)
    manifest_json: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(100))
    uploaded_at: Mapped[dt.datetime]
    release_class: Mapped[str] = mapped_column(String(10), default="feature")
    customer: Mapped[str | None] = mapped_column(String(64))
    bundle_sha256: Mapped[str | None] = mapped_column(String(64), default=None)  # as uploaded
    # How its stations report it (chargeward.model.reported, ADR 0037): canonical JSON or None.
    reported_versions: Mapped[str | None] = mapped_column(Text, default=None)


class Proposal(Base):
    """A proposed next version of the TUF targets metadata, waiting for k-of-n approval."""

    __tablename__ = "proposals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # release | renewal | revocation
    release_id: Mapped[str | None] = mapped_column(ForeignKey("releases.id"), index=True)
    base_version: Mapped[int]
    metadata_json: Mapped[str] = mapped_column(Text)
    # The tenant roles (ADR 0026) the proposal also changes: role name -> metadata JSON text.
    roles_json: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    state: Mapped[str] = mapped_column(String(20), default="open")  # open | published
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime]
    published_at: Mapped[dt.datetime | None]
    targets_version: Mapped[int | None]


class Approval(Base):
    """One approver's signature over one proposal's bytes."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id"), index=True)
    keyid: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(100))
    signature: Mapped[str] = mapped_column(Text)
    # The same key's signatures over the proposal's tenant roles: role name -> hex signature.
    role_signatures: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    submitted_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime]


class ApproverKey(Base):
    """Which operator account holds a TUF targets (approver) key (server.approver_keys)."""

    __tablename__ = "approver_keys"

    keyid: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(100), index=True)
    label: Mapped[str] = mapped_column(String(100))  # the owner named in the root metadata
    root_version: Mapped[int]
    registered_by: Mapped[str] = mapped_column(String(100))
    registered_at: Mapped[dt.datetime]
    retired_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ReleaseImage(Base):
    __tablename__ = "release_images"

    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    component: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(800))


class ReleaseDelta(Base):
    """A binary delta rebuilding a component of a release from that of an older release the
    fleet runs (made at upload, :mod:`chargeward.server.rollout.deltas`; the file is a blob)."""

    __tablename__ = "release_deltas"

    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    component: Mapped[str] = mapped_column(String(32), primary_key=True)
    from_version: Mapped[str] = mapped_column(String(50), primary_key=True)
    from_sha256: Mapped[str] = mapped_column(String(64))
    from_length: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)


class DownloadUsage(Base):
    """Bytes the server sent to a station for one download link: one firmware file for one
    update (``request_id``, 0 for none) or one local-cache publication; ``campaign_id`` when a
    campaign sent it (server.link_budget)."""

    __tablename__ = "download_usage"

    station_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    request_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[dt.datetime]
    last_at: Mapped[dt.datetime]


class SiteCache(Base):
    """A firmware file a site's Local Controller was asked to publish (OCPP PublishFirmware):
    ``id`` is the requestId; ``locations`` what it serves the file at once ``Published``
    (server.local_cache)."""

    __tablename__ = "site_caches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)  # the Local Controller
    site_id: Mapped[str] = mapped_column(String(48), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str] = mapped_column(String(32))
    campaign_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # Requested | Downloading | ... (PublishFirmwareStatusEnumType) | Unpublished | Failed
    status: Mapped[str] = mapped_column(String(20))
    locations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reason: Mapped[str | None] = mapped_column(String(300), default=None)
    requested_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


Index("ux_site_caches_station_file", SiteCache.station_id, SiteCache.sha256, unique=True)


class ReleaseDocument(Base):
    """A supply-chain document of a release: SBOM, scan report, VEX (from the bundle, bound to
    the release id by the manifest) or provenance (added after upload, verified)."""

    __tablename__ = "release_documents"

    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    added_by: Mapped[str] = mapped_column(String(100))
    added_at: Mapped[dt.datetime]


class ReleaseComponent(Base):
    """One component or library a release's SBOM lists (fleet exposure queries)."""

    __tablename__ = "release_components"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(100))
    purl: Mapped[str | None] = mapped_column(String(500))


class FirmwareUpdate(Base):
    """One UpdateFirmware sent to one station; ``id`` is the OCPP requestId."""

    __tablename__ = "firmware_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(36), unique=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), index=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    component: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(100))
    response_status: Mapped[str | None] = mapped_column(String(30))
    last_status: Mapped[str | None] = mapped_column(String(30))
    outcome: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class FirmwareStatusEvent(Base):
    __tablename__ = "firmware_status_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    request_id: Mapped[int | None]
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(30))
    received_at: Mapped[dt.datetime]


class RevokedStationCertificate(Base):
    """A station certificate that no longer authenticates: revoked by an operator, or retired
    (``superseded``) when its station accepted a renewal.  The charger CA's CRL lists these
    (server.station_certificates, ADR 0022)."""

    __tablename__ = "revoked_station_certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    issuer: Mapped[str] = mapped_column(String(64))  # SHA-256 of the DER issuer name
    serial: Mapped[str] = mapped_column(String(40))  # hex, lower case, no leading zeroes
    expires_at: Mapped[dt.datetime | None]  # the certificate's notAfter, when known
    reason: Mapped[str] = mapped_column(String(30))  # RFC 5280 5.3.1 reason name
    revoked_at: Mapped[dt.datetime]
    revoked_by: Mapped[str] = mapped_column(String(100))


Index(
    "ux_revoked_station_certificates",
    RevokedStationCertificate.issuer,
    RevokedStationCertificate.serial,
    unique=True,
)


class SecurityEvent(Base):
    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    type: Mapped[str] = mapped_column(String(50))
    timestamp: Mapped[dt.datetime]
    tech_info: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[dt.datetime]


class StationEvent(Base):
    """A NotifyEvent entry (OCPP N07), kept within ServerLimits.station_events per station and
    station_event_age (ADR 0035)."""

    __tablename__ = "station_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[dt.datetime]
    trigger: Mapped[str] = mapped_column(String(20))
    notification_type: Mapped[str] = mapped_column(String(30))
    component: Mapped[str] = mapped_column(String(50))
    variable: Mapped[str] = mapped_column(String(50))
    actual_value: Mapped[str] = mapped_column(String(2500))
    tech_code: Mapped[str | None] = mapped_column(String(50), default=None)
    tech_info: Mapped[str | None] = mapped_column(String(500), default=None)
    cleared: Mapped[bool] = mapped_column(default=False)
    received_at: Mapped[dt.datetime]


class BootEvent(Base):
    __tablename__ = "boot_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    reason: Mapped[str] = mapped_column(String(30))
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(20))
    vendor: Mapped[str | None] = mapped_column(String(50))
    received_at: Mapped[dt.datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    # Operator accounts (server/accounts.py): a token made on the server host acts as itself
    # with ``role``; one minted by a user acts as ``owner``, limited to ``scopes``.
    role: Mapped[str | None] = mapped_column(String(30), default=None)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    scopes: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # {"scopes": [...]}
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_by: Mapped[str | None] = mapped_column(String(100), default=None)


class StationLog(Base):
    """One GetLog sent to one station (OCPP N01); ``id`` is the OCPP requestId.

    The station uploads to a one-time URL: only the SHA-256 of its token is stored.
    """

    __tablename__ = "station_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(36), unique=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), index=True)
    log_type: Mapped[str] = mapped_column(String(20))  # SecurityLog | DiagnosticsLog
    oldest: Mapped[dt.datetime | None]
    latest: Mapped[dt.datetime | None]
    requested_by: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[dt.datetime]
    token_used_at: Mapped[dt.datetime | None]
    response_status: Mapped[str | None] = mapped_column(String(30))  # GetLogResponse.status
    filename: Mapped[str | None] = mapped_column(String(255))  # as the station named it
    last_status: Mapped[str | None] = mapped_column(String(30))  # LogStatusNotification
    sha256: Mapped[str | None] = mapped_column(String(64))  # the upload, in the blob store
    length: Mapped[int | None] = mapped_column(BigInteger)
    uploaded_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class LogStatusEvent(Base):
    """One LogStatusNotification as received."""

    __tablename__ = "log_status_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    request_id: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(30))
    received_at: Mapped[dt.datetime]


# -- fleet registry (server/fleet.py, server/alerts.py) -------------------------------------


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    customer: Mapped[str | None] = mapped_column(String(64), default=None)
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name
    maintenance_windows: Mapped[list[Any]] = mapped_column(JSON, default=list)
    bandwidth_note: Mapped[str | None] = mapped_column(String(200), default=None)
    # Link budget (server.link_budget): when the site's chargers may download (weekly windows
    # in its time zone, none = any time) and at most how fast, all together (bytes/s).
    download_windows: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    bandwidth_limit: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[dt.datetime]


class ChargerModel(Base):
    """A hardware model and its support periods (years from manufacture, or explicit ends)."""

    __tablename__ = "charger_models"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)  # as in BootNotification
    vendor: Mapped[str | None] = mapped_column(String(50), default=None)
    feature_support_years: Mapped[int] = mapped_column(Integer, default=3)
    security_support_years: Mapped[int] = mapped_column(Integer, default=5)
    feature_support_end: Mapped[dt.date | None] = mapped_column(default=None)
    security_support_end: Mapped[dt.date | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime]


class StationTag(Base):
    __tablename__ = "station_tags"

    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)


class Alert(Base):
    """Something an operator must look at; ``key`` deduplicates open alerts per station."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(30), index=True)  # firmware_drift | security_event
    severity: Mapped[str] = mapped_column(String(10))  # critical | warning
    station_id: Mapped[str] = mapped_column(String(48), index=True)
    key: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(String(300))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(15), default="open")  # open|acknowledged|resolved
    count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime]
    last_seen_at: Mapped[dt.datetime]
    acknowledged_by: Mapped[str | None] = mapped_column(String(100), default=None)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(default=None)


Index("ix_alerts_station_key", Alert.station_id, Alert.key)
Index("ix_security_events_type_time", SecurityEvent.type, SecurityEvent.timestamp)


# -- operator accounts (server/accounts.py) -------------------------------------------------


class User(Base):
    """An operator account: argon2id password hash, role, TOTP secret (RFC 6238)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(30))
    # A customer account (a charge point operator's staff) sees and acts on that customer's
    # stations only; None: the manufacturer's own staff, every customer (server.tenancy).
    customer: Mapped[str | None] = mapped_column(String(64), default=None)
    totp_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    # The newest TOTP time-step accepted: a code of this step or older is a replay.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # A secret shown to the user for self-enrolment, until confirmed with a code (ADR 0028).
    totp_pending_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class UserSession(Base):
    """A login session; only the SHA-256 of its bearer token is stored."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    last_used_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class LoginThrottle(Base):
    """Failed logins per account (``user:<name>``) and per client address (``addr:<ip>``)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lock_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Per address: the open audit window (ADR 0027): its start, failures and refusals while
    # locked counted in it, and the first usernames tried (bounded).
    window_started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    window_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    window_refused: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    window_usernames: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")


# Scale-out (PostgreSQL only): chargeward.server.store.cluster_tables, part of SCHEMA.


# -- campaigns (server/campaigns.py, chargeward.campaign) ----------------------------------


class Campaign(Base):
    """A staged rollout of one release; ``spec`` is the validated definition (JSON form)."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    release_class: Mapped[str] = mapped_column(String(10))
    spec: Mapped[dict[str, Any]] = mapped_column()
    expected: Mapped[dict[str, Any]] = mapped_column()  # component -> version
    # awaiting_approval | running | paused | aborted | completed
    status: Mapped[str] = mapped_column(String(20), index=True)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    stage_sizes: Mapped[list[Any]] = mapped_column(JSON)
    stage_started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    pause_reason: Mapped[str | None] = mapped_column(String(300), default=None)
    gate_baseline: Mapped[list[Any]] = mapped_column(JSON, default=lambda: [0, 0])
    rollback_of: Mapped[int | None] = mapped_column(Integer, default=None)
    created_by: Mapped[str] = mapped_column(String(100))
    approved_by: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class CampaignStation(Base):
    """One station's run in one campaign; ``run`` is the machine state (campaign.codec)."""

    __tablename__ = "campaign_stations"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(48), primary_key=True, index=True)
    stage: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    request_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    run: Mapped[dict[str, Any]] = mapped_column()
    # Copies of run fields that views count without decoding ``run``.
    deferred: Mapped[bool] = mapped_column(default=False)  # held back by a charging session
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime]


Index("ix_campaign_stations_state", CampaignStation.campaign_id, CampaignStation.state)
