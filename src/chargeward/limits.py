"""Input limits, one frozen object per side (ADR 0030), as python-tuf's ``UpdaterConfig``.

Every bound Chargeward puts on what it reads from outside (a file, a frame, a request, a
download) is a field of one of three dataclasses, with its default here and nowhere else:

- :class:`FormatLimits`: what every parser of Chargeward's own formats enforces, on either
  side (release bundles and manifests, image and delta headers, key files, signatures, DSSE
  envelopes, certificate paths and CRLs, campaign specs, fleet fields, OCPP frame nesting,
  approvals, supply-chain documents, evidence packs, factory batches, simulator scenarios).
- :class:`AgentLimits`: what the reference agent accepts from its CSMS and writes back.
- :class:`ServerLimits`: what the Chargeward server accepts from stations and HTTP clients.

A component that has a configuration takes its object there (``AgentConfig.limits``,
``ServerConfig.limits`` and ``ServerState.limits``); a pure parser takes a ``limits=``
keyword, or reads the default instance (:data:`DEFAULT_FORMAT_LIMITS`,
:data:`DEFAULT_AGENT_LIMITS`, :data:`DEFAULT_SERVER_LIMITS`).  Two older objects of the same
shape stay beside their component: the agent's TUF client limits
(``chargeward.agent.tuf_fetcher.RepositoryLimits``, in ``AgentConfig.repository_limits``) and
the HTTP listener's timeouts (``chargeward.server.http.limits.HttpLimits``, in
``ServerConfig.http_limits``).

Bounds fixed by a standard (OCPP field lengths, PKCS#11 label size, RFC 5280 CRL numbers,
PostgreSQL integer row ids) and policies that bound no input (lockout lengths, token
lifetimes, backoff caps, batch sizes of the group commit) stay as constants in their modules.

    >>> small = FormatLimits(manifest_bytes=1024)
    >>> small.manifest_bytes < DEFAULT_FORMAT_LIMITS.manifest_bytes
    True
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class FormatLimits:
    """Bounds of Chargeward's own formats, the same for whoever parses them.

    ============================ ======= =========== ============================================
    field                        unit    default     bounds (and why that value)
    ============================ ======= =========== ============================================
    manifest_bytes               bytes   1 MiB       a release manifest (a few KiB in practice)
    release_images               count   16          images in one release (a slot group)
    release_notes_chars          chars   16 Ki       a manifest's release notes
    attestation_bytes            bytes   8 MiB       one attestation member (SBOM, scan, VEX)
    archive_certificate_bytes    bytes   16 KiB      the signing certificate member of a bundle
    bundle_image_bytes           bytes   2 GiB       one image member of a bundle (the agent
                                                     takes less: ``AgentConfig.max_image_bytes``)
    image_header_bytes           bytes   64 KiB      a CWFW image envelope header
    delta_header_bytes           bytes   4 KiB       a delta file's header
    keyfile_bytes                bytes   64 KiB      a private key file (< 1 KiB in practice)
    keyfile_header_bytes         bytes   512         a key file's KDF header
    keyfile_scrypt_memory        bytes   1 GiB       memory a key file's scrypt may ask for
    keyfile_scrypt_r             count   32          scrypt block size r a key file may name
    keyfile_scrypt_p             count   4           scrypt parallelism p a key file may name
    dsse_envelope_bytes          bytes   1 MiB       a DSSE envelope (build provenance)
    dsse_signatures              count   16          signatures on one DSSE envelope
    dsse_payload_type_chars      chars   256         a DSSE envelope's payloadType
    dsse_keyid_chars             chars   256         a DSSE signature's keyid
    dsse_signature_chars         chars   1024        a DSSE signature (P-256 DER: 96 base64)
    certificate_bytes            bytes   22000       one certificate of a path (OCPP: 5500 PEM
                                                     characters; 4 bytes each, with margin)
    path_anchors                 count   64          trust anchors offered to path validation
    path_intermediates           count   8           intermediates offered to path validation
    root_links                   count   4           link certificates with one new root
    crl_bytes                    bytes   1 MiB       a CRL, untrusted until its signature checks
    campaign_stages              count   20          stages of a campaign (canary and the rest)
    campaign_stations_listed     count   100 000     stations a campaign names one by one
    campaign_download_ahead      time    7 days      how early a campaign may send downloads
    station_tags                 count   32          tags on one station
    maintenance_windows          count   28          windows of one site (4 a day, a week)
    ocpp_depth                   levels  32          nesting of one OCPP frame's JSON
    approval_roles               count   200         tenant roles one approval may sign
    approval_file_bytes          bytes   4 KiB       an approval file, before its roles
    public_key_file_bytes        bytes   64 KiB      a public key file given to a verifier
    sbom_bytes                   bytes   16 MiB      a CycloneDX SBOM
    allowlist_bytes              bytes   1 MiB       a vulnerability allowlist
    component_list_bytes         bytes   1 MiB       a declared component list
    advisory_bytes               bytes   4 MiB       one advisory (OSV or CSAF)
    advisory_files               count   500 000     advisory files in one directory (OSV dump)
    rebuild_outputs              count   256         build outputs compared by a rebuild check
    rebuild_result_bytes         bytes   1 MiB       a rebuild result file
    evidence_pack_files          count   100 000     files in one evidence pack
    evidence_pack_bytes          bytes   512 MiB     an evidence pack, unpacked
    evidence_envelope_bytes      bytes   4 MiB       a pack's signed envelope (audit proofs)
    attack_catalogue_bytes       bytes   1 MiB       the attack catalogue (TOML)
    requirements_bytes           bytes   1 MiB       the requirements matrix (TOML)
    test_report_bytes            bytes   64 MiB      a JUnit test report read for evidence
    factory_batch                count   100 000     chargers in one factory provisioning batch
    scenario_stations            count   100 000     stations in one simulator scenario
    ============================ ======= =========== ============================================
    """

    manifest_bytes: int = 1 * MIB
    release_images: int = 16
    release_notes_chars: int = 16 * KIB
    attestation_bytes: int = 8 * MIB
    archive_certificate_bytes: int = 16 * KIB
    bundle_image_bytes: int = 2 * GIB
    image_header_bytes: int = 64 * KIB
    delta_header_bytes: int = 4 * KIB
    keyfile_bytes: int = 64 * KIB
    keyfile_header_bytes: int = 512
    keyfile_scrypt_memory: int = 1 * GIB
    keyfile_scrypt_r: int = 32
    keyfile_scrypt_p: int = 4
    dsse_envelope_bytes: int = 1 * MIB
    dsse_signatures: int = 16
    dsse_payload_type_chars: int = 256
    dsse_keyid_chars: int = 256
    dsse_signature_chars: int = 1024
    certificate_bytes: int = 22000
    path_anchors: int = 64
    path_intermediates: int = 8
    root_links: int = 4
    crl_bytes: int = 1 * MIB
    campaign_stages: int = 20
    campaign_stations_listed: int = 100_000
    campaign_download_ahead: dt.timedelta = dt.timedelta(days=7)
    station_tags: int = 32
    maintenance_windows: int = 28
    ocpp_depth: int = 32
    approval_roles: int = 200
    approval_file_bytes: int = 4 * KIB
    public_key_file_bytes: int = 64 * KIB
    sbom_bytes: int = 16 * MIB
    allowlist_bytes: int = 1 * MIB
    component_list_bytes: int = 1 * MIB
    advisory_bytes: int = 4 * MIB
    advisory_files: int = 500_000
    rebuild_outputs: int = 256
    rebuild_result_bytes: int = 1 * MIB
    evidence_pack_files: int = 100_000
    evidence_pack_bytes: int = 512 * MIB
    evidence_envelope_bytes: int = 4 * MIB
    attack_catalogue_bytes: int = 1 * MIB
    requirements_bytes: int = 1 * MIB
    test_report_bytes: int = 64 * MIB
    factory_batch: int = 100_000
    scenario_stations: int = 100_000


@dataclass(frozen=True)
class AgentLimits:
    """What the reference agent takes from its CSMS (``AgentConfig.limits``).

    ======================== ======= ======== ==================================================
    field                    unit    default  bounds (and why that value)
    ======================== ======= ======== ==================================================
    frame_bytes              bytes   256 KiB  one OCPP frame from the CSMS (larger: close 1009)
    retry_after_s            seconds 3600     a ``Retry-After`` a download server may ask for
    roots_per_type           count   10       roots installed per certificate type (OCPP
                                              M05.FR.06: a full store answers Rejected)
    log_upload_bytes         bytes   2 MiB    one log upload a GetLog request makes (the
                                              newest entries are kept)
    sealed_credentials_bytes bytes   64 KiB   the sealed credentials file (< 1 KiB in practice)
    ======================== ======= ======== ==================================================

    The TUF client's caps and timeouts are ``AgentConfig.repository_limits``; the largest
    firmware image, ``AgentConfig.max_image_bytes``.
    """

    frame_bytes: int = 256 * KIB
    retry_after_s: float = 3600.0
    roots_per_type: int = 10
    log_upload_bytes: int = 2 * MIB
    sealed_credentials_bytes: int = 64 * KIB


@dataclass(frozen=True)
class ServerLimits:
    """What the Chargeward server takes from stations and HTTP clients (``ServerState.limits``).

    ===================== ======= ======== ======================================================
    field                 unit    default  bounds (and why that value)
    ===================== ======= ======== ======================================================
    frame_bytes           bytes   128 KiB  one OCPP frame from a station (messages here are
                                           far smaller)
    json_body_bytes       bytes   1 MiB    any JSON or form request body
    login_body_bytes      bytes   16 KiB   a login body: a username, a password, a TOTP code
    bundle_bytes          bytes   2 GiB    a release bundle upload (streamed to disk)
    log_upload_bytes      bytes   8 MiB    one log file a station uploads
    provenance_bytes      bytes   1 MiB    a release's provenance envelope
    import_stations       count   10 000   stations in one import request
    page_rows             count   1000     rows one alert or history page may ask for
    station_components    count   16       components a station reports versions of
    approver_keyid_chars  chars   64       an approver key id (SHA-256, hex)
    approver_label_chars  chars   100      an approver key's label
    station_events        count   200      NotifyEvent rows kept per station (older pruned)
    station_event_age     time    30 days  how long a NotifyEvent row is kept
    meter_evses           count   16       EVSEs whose last MeterValues a station keeps
    meter_samples         count   32       sampled values kept of one EVSE's last meter value
    device_model_vars     count   2000     variables kept of one NotifyReport device model
                                           (the rest counted: ``truncated``)
    device_model_reports  count   2        multi-part NotifyReports one station assembles
                                           at once (another requestId drops the oldest)
    ===================== ======= ======== ======================================================

    Request-model bounds (pydantic ``Field``/``Query``) are fixed when the routes are
    declared, so they read :data:`DEFAULT_SERVER_LIMITS`; the HTTP listener's timeouts are
    ``ServerConfig.http_limits``.
    """

    frame_bytes: int = 128 * KIB
    json_body_bytes: int = 1 * MIB
    login_body_bytes: int = 16 * KIB
    bundle_bytes: int = 2 * GIB
    log_upload_bytes: int = 8 * MIB
    provenance_bytes: int = 1 * MIB
    import_stations: int = 10_000
    page_rows: int = 1000
    station_components: int = 16
    approver_keyid_chars: int = 64
    approver_label_chars: int = 100
    station_events: int = 200
    station_event_age: dt.timedelta = dt.timedelta(days=30)
    meter_evses: int = 16
    meter_samples: int = 32
    device_model_vars: int = 2000
    device_model_reports: int = 2


DEFAULT_FORMAT_LIMITS = FormatLimits()
DEFAULT_AGENT_LIMITS = AgentLimits()
DEFAULT_SERVER_LIMITS = ServerLimits()

__all__ = [
    "DEFAULT_AGENT_LIMITS",
    "DEFAULT_FORMAT_LIMITS",
    "DEFAULT_SERVER_LIMITS",
    "AgentLimits",
    "FormatLimits",
    "ServerLimits",
]
