"""The reference agent's settings (:class:`AgentConfig`), given once at start-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chargeward.agent.location import LocationPolicy
from chargeward.agent.tuf_client import RepositoryLimits
from chargeward.errors import ConfigError
from chargeward.limits import DEFAULT_AGENT_LIMITS, AgentLimits
from chargeward.model.firmware import ImageHeader

OCPP_VERSIONS = ("2.0.1", "1.6")


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path
    csms_url: str
    connectors: int = 1
    boot_attempts: int = 3
    max_image_bytes: int = 512 * 1024 * 1024
    # Reconnecting (OCPP 2.0.1 Part 4; the device model's OCPPCommCtrlr.RetryBackOff*
    # variables override these): wait reconnect_delay, doubled per failed connection up to
    # reconnect_repeat_times times, plus up to reconnect_random_range (None: reconnect_delay).
    reconnect_delay: float = 5.0
    reconnect_random_range: float | None = None
    reconnect_repeat_times: int = 5
    # A reboot: the time a charger takes to restart before it connects again.
    reboot_delay: float = 20.0
    response_timeout: float = 30.0
    # Websocket pings (OCPPCommCtrlr.WebSocketPingInterval overrides ping_interval; 0: none):
    # a CSMS that stops answering (a hung node behind a balancer) is noticed
    # after ping_interval + ping_timeout and the agent connects again.
    ping_interval: float = 60.0
    ping_timeout: float = 20.0
    default_retries: int = 3
    default_retry_interval: int = 30
    repository_url: str | None = None  # TUF repository base, e.g. http://host:8080/tuf/
    update_check_interval: float = 86400.0  # seconds between checks for security releases
    repository_limits: RepositoryLimits = field(default_factory=RepositoryLimits)
    # What the agent takes from its CSMS: frame size, Retry-After, roots, log uploads (ADR 0030).
    limits: AgentLimits = DEFAULT_AGENT_LIMITS
    download_rate_limit: int | None = None  # bytes per second; None: as fast as the link
    # HTTP proxy for firmware downloads (e.g. the site's gateway); None: connect directly.
    download_proxy: str | None = None
    # A trial slot must be healthy (application started, CSMS connected, connectors
    # Available) within this many seconds, or the charger reboots and uses up an attempt.
    trial_health_timeout: float = 600.0
    # A Local Controller (OCPP L03/L04): serve published firmware on this address ("host:port")
    # at this base URL (what the site's chargers reach it at); None: an ordinary charger.
    local_cache_listen: str | None = None
    local_cache_url: str | None = None
    # The charging application's start-up self-test: returns a problem, or None when it
    # started.  The reference agent has no application of its own; simulators inject one.
    self_test: Callable[[ImageHeader], str | None] | None = None
    # Where the CSMS may send the charger to download or upload (UpdateFirmware, deltas,
    # PublishFirmware, GetLog): refuses loopback, link-local, private networks and
    # credentials in URLs unless allowed (chargeward.agent.location, ADR 0023).
    location_policy: LocationPolicy = field(default_factory=LocationPolicy)
    # LAB ONLY: install a ManufacturerRootCertificate the held roots do not endorse (any CSMS
    # could then replace the firmware trust anchor).  Warned at start and on every use.
    allow_unendorsed_manufacturer_roots: bool = False
    # The OCPP version the agent speaks: "2.0.1", or "1.6" (OCPP 1.6J with the Security
    # Whitepaper, chargeward.ocpp.station16).  legacy_firmware_update (1.6 only): a station
    # without the whitepaper (plain UpdateFirmware / FirmwareStatusNotification).
    ocpp_version: str = "2.0.1"
    legacy_firmware_update: bool = False

    def __post_init__(self) -> None:
        if self.ocpp_version not in OCPP_VERSIONS:
            raise ConfigError(
                f"OCPP version {self.ocpp_version!r}: one of {', '.join(OCPP_VERSIONS)}"
            )
        if self.legacy_firmware_update and self.ocpp_version != "1.6":
            raise ConfigError("a legacy firmware update (no Security Whitepaper) is OCPP 1.6 only")
