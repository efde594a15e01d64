"""API schemas (pydantic): what the REST API and the CLI show."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, Field, StringConstraints

from chargeward.ocpp.csms16 import LEGACY_CONSEQUENCE

# Numbers in paths and queries are bounded by what the database can store (PostgreSQL
# integer, SQLite's 64-bit one for offsets), so an absurd one is a 422, not a server error.
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=0, le=MAX_ROW_ID)]
Offset = Annotated[int, Query(ge=0, le=2**63 - 1)]


class StationSummary(BaseModel):
    id: str
    model: str | None
    vendor: str | None
    firmware_version: str | None
    connected: bool
    last_seen: dt.datetime | None
    last_boot_reason: str | None
    # Fleet registry
    serial_number: str | None = None
    hardware_revision: str | None = None
    customer: str | None = None
    site_id: str | None = None
    tags: list[str] = []
    manufactured_on: dt.date | None = None
    reported_firmware: dict[str, str] = {}  # component -> version ("main" from BootNotification)
    expected_firmware: dict[str, str] = {}
    security_profile: int | None = None
    certificate_expires_at: dt.datetime | None = None
    open_alerts: int = 0
    # OCPP 1.6J (ADR 0039): the last connection's protocol, the operator's mark for plain
    # UpdateFirmware and whether the station has shown SignedUpdateFirmware support.
    ocpp_version: str | None = None
    legacy_firmware_update: bool = Field(
        default=False, description="plain OCPP 1.6 UpdateFirmware; " + LEGACY_CONSEQUENCE
    )
    signed_update_support: bool | None = None


class SiteView(BaseModel):
    id: str
    name: str
    customer: str | None
    timezone: str
    maintenance_windows: list[dict[str, Any]]
    bandwidth_note: str | None
    download_windows: list[dict[str, Any]] = []  # none: downloads at any time
    bandwidth_limit: int | None = None  # bytes/s for all the site's downloads together
    stations: int = 0


class ChargerModelView(BaseModel):
    id: str
    vendor: str | None
    feature_support_years: int
    security_support_years: int
    feature_support_end: dt.date | None
    security_support_end: dt.date | None


class SupportView(BaseModel):
    """One station out of, near the end of, or of unknown support (ends are the last day)."""

    station_id: str
    model: str | None
    site_id: str | None
    customer: str | None
    manufactured_on: dt.date | None
    feature_support_end: dt.date | None
    feature_state: str  # supported | ending | ended | unknown
    feature_days_left: int | None
    security_support_end: dt.date | None
    security_state: str
    security_days_left: int | None


class AlertView(BaseModel):
    id: int
    kind: str
    severity: str
    station_id: str
    message: str
    details: dict[str, Any]
    state: str
    count: int
    created_at: dt.datetime
    last_seen_at: dt.datetime
    acknowledged_by: str | None
    acknowledged_at: dt.datetime | None
    resolved_at: dt.datetime | None


class FirmwareStatusView(BaseModel):
    status: str
    request_id: int | None
    transaction_id: str | None
    received_at: dt.datetime


class SecurityEventView(BaseModel):
    type: str
    timestamp: dt.datetime
    tech_info: str | None
    received_at: dt.datetime
    id: int | None = None
    station_id: str | None = None
    critical: bool = False  # raises an alert (chargeward.server.fleet.alerts.SECURITY_EVENT_ALERTS)


# A GetLog request and what became of it: its statuses and the file once uploaded.  (No
# docstring: it would become the schema's description in the OpenAPI document.)
class LogView(BaseModel):
    request_id: int
    transaction_id: str
    station_id: str
    log_type: str
    oldest: dt.datetime | None
    latest: dt.datetime | None
    requested_by: str
    response_status: str | None
    filename: str | None
    last_status: str | None  # the newest LogStatusNotification
    statuses: list[str]  # every LogStatusNotification, in order
    sha256: str | None  # set once the file arrived
    length: int | None
    uploaded_at: dt.datetime | None
    upload_expires_at: dt.datetime
    created_at: dt.datetime


class BootView(BaseModel):
    reason: str
    firmware_version: str | None
    received_at: dt.datetime


class UpdateView(BaseModel):
    request_id: int
    transaction_id: str
    station_id: str
    release_id: str
    version: str
    response_status: str | None
    last_status: str | None
    outcome: str
    requested_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class DownloadsView(BaseModel):
    """What the server sent the station: bytes in all, download requests, bytes per campaign
    (by id)."""

    bytes_sent: int = 0
    requests: int = 0
    campaigns: dict[str, int] = {}


class StationDetail(StationSummary):
    connector_status: dict[str, str]
    firmware_statuses: list[FirmwareStatusView]
    security_events: list[SecurityEventView]
    boots: list[BootView]
    updates: list[UpdateView]
    # The newest security release the station reported as available for it, if any.
    available_update: dict[str, Any] | None = None
    alerts: list[AlertView] = []  # open and acknowledged, newest first
    support: SupportView | None = None
    logs: str | None = None  # where its GetLog uploads are listed (GET)
    downloads: DownloadsView = DownloadsView()


class ReleaseImageView(BaseModel):
    component: str
    sha256: str
    length: int
    signature: str  # the OCPP firmware signature (base64), also in the image's TUF target


class ReleaseDeltaView(BaseModel):
    """A delta the server made for the release from a version the fleet runs."""

    component: str
    from_version: str
    from_sha256: str
    from_length: int
    sha256: str
    length: int


class ReportedVersionsView(BaseModel):
    """What one model's stations report for a release (ADR 0037)."""

    versions: list[str] = []
    pattern: str | None = None  # matched in full


class ReleaseView(BaseModel):
    id: str
    version: str
    security_version: int
    hardware_models: list[str]
    uploaded_by: str
    uploaded_at: dt.datetime
    images: list[ReleaseImageView]
    release_class: str = "feature"
    customer: str | None = None
    state: str = "pending"  # pending (awaiting approval) | published
    targets_version: int | None = None
    bundle_sha256: str | None = None  # the bundle file as uploaded
    documents: dict[str, str] = {}  # supply-chain document name -> SHA-256
    deltas: list[ReleaseDeltaView] = []  # from the versions the fleet ran at upload
    # model -> how its stations report this release, besides its version (ADR 0037)
    reported_versions: dict[str, ReportedVersionsView] = {}
    provenance: str = "chargeward"  # chargeward (a CWFW bundle) | vendor-supplied (ADR 0041)


class ProposedTarget(BaseModel):
    path: str
    length: int
    sha256: str
    custom: dict[str, Any]


class ProposalView(BaseModel):
    id: int
    kind: str
    release_id: str | None
    state: str
    base_version: int
    created_by: str
    metadata: str  # the TUF targets metadata to sign (JSON text)
    # The tenant roles (customer-locked releases, ADR 0026) to sign too: name -> JSON text.
    roles: dict[str, str] = {}
    added: list[ProposedTarget]
    approvers: list[str]
    threshold: int
    missing: int
    summary: str


class ApprovalRequest(BaseModel):
    keyid: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]+$")
    signature: str = Field(min_length=16, max_length=400, pattern=r"^[0-9a-f]+$")
    # The same key's signature over each tenant role of the proposal (ADR 0026).
    roles: dict[
        Annotated[str, StringConstraints(pattern=r"^tenant-[0-9a-f]{32}$")],
        Annotated[str, StringConstraints(min_length=16, max_length=400, pattern=r"^[0-9a-f]+$")],
    ] = Field(default_factory=dict, max_length=200)
    # A fresh TOTP code of the caller's login session: the dashboard always sends one (the
    # person at the keyboard confirms), and a wrong one refuses the approval.
    totp: str | None = Field(default=None, max_length=10)


class ApprovalRecordView(BaseModel):
    """One approver's signature as the server received it."""

    approver: str  # the owner of the TUF key that signed
    keyid: str
    signature: str  # hex, over the proposal's targets metadata
    submitted_by: str  # the API caller who submitted it
    submitted_at: dt.datetime


class ProposalApprovalsView(BaseModel):
    """A proposal of a release and every approval it received (read only)."""

    proposal: int
    kind: str
    state: str  # open | published
    base_version: int
    created_by: str
    created_at: dt.datetime
    published_at: dt.datetime | None
    targets_version: int | None
    approvals: list[ApprovalRecordView]


class ReleaseFilesView(BaseModel):
    """The signed files of a release exactly as uploaded."""

    release_id: str
    manifest: str  # manifest.json, byte for byte (its SHA-256 is the release id)
    signing_certificate: str  # PEM


class RoleStatusView(BaseModel):
    role: str
    version: int
    expires: dt.datetime
    keys: int
    threshold: int
    warning: str | None


class UpdateRequest(BaseModel):
    release_id: str = Field(min_length=8, max_length=64, pattern=r"^[0-9a-f]+$")
    retries: int | None = Field(default=3, ge=0, le=100)
    retry_interval: int | None = Field(default=30, ge=0, le=86400)


class UpdateAccepted(BaseModel):
    transaction_id: str
    request_id: int
    station_response: str


class AuditEntryView(BaseModel):
    id: int
    leaf_index: int  # position in the Merkle log (chargeward.audit.tree)
    leaf_hash: str  # hex SHA-256(0x00 || canonical entry), stored when appended
    time: dt.datetime
    actor: str
    action: str
    target: str
    transaction_id: str | None
    details: dict[str, object]


class Problem(BaseModel):
    detail: str
