"""Security event types: OCPP 2.0.1's list, and Chargeward's own events sent as listed ones.

OCPP 2.0.1 Part 2 Appendices lists the security event types; the schema allows any string,
but a CSMS that enforces the list refuses the others (and the event is lost).  The agent sends
each of Chargeward's own events as the listed type closest to it, with its own name first in
techInfo; the agent's security log keeps the own name, and the Chargeward server reads it back
(and still accepts the own names older agents sent as the type).

    >>> on_the_wire("FirmwareRollbackRefused", "security version 3 below floor 5")
    ('AttemptedReplayAttacks', 'FirmwareRollbackRefused: security version 3 below floor 5')
    >>> on_the_wire("InvalidFirmwareSignature", "bad signature")
    ('InvalidFirmwareSignature', 'bad signature')
    >>> chargeward_event("AttemptedReplayAttacks", "FirmwareRollbackRefused: below the floor")
    ('FirmwareRollbackRefused', 'below the floor')
    >>> chargeward_event("FirmwareRollbackRefused", "below the floor")  # an older agent
    ('FirmwareRollbackRefused', 'below the floor')
    >>> chargeward_event("InvalidFirmwareSignature", "FirmwareRollbackRefused: not its type")
    ('InvalidFirmwareSignature', 'FirmwareRollbackRefused: not its type')
"""

from __future__ import annotations

from collections.abc import Mapping

TECH_INFO_MAX = 255  # SecurityEventNotificationRequest.techInfo

# OCPP 2.0.1 Part 2 Appendices, "Security Events".
OCPP_TYPES = frozenset(
    {
        "FirmwareUpdated",
        "FailedToAuthenticateAtCsms",
        "CsmsFailedToAuthenticate",
        "SettingSystemTime",
        "StartupOfTheDevice",
        "ResetOrReboot",
        "SecurityLogWasCleared",
        "ReconfigurationOfSecurityParameters",
        "MemoryExhaustion",
        "InvalidMessages",
        "AttemptedReplayAttacks",
        "TamperDetectionActivated",
        "InvalidFirmwareSignature",
        "InvalidFirmwareSigningCertificate",
        "InvalidCsmsCertificate",
        "InvalidChargingStationCertificate",
        "InvalidTLSVersion",
        "InvalidTLSCipherSuite",
        "MaintenanceLoginAccepted",
        "MaintenanceLoginFailed",
    }
)

# Chargeward's own event -> the listed type it is sent as.
CHARGEWARD_TYPES: Mapping[str, str] = {
    # A TUF repository check refused the image (or its metadata): the update is reported
    # InvalidSignature too.
    "FirmwareRepositoryCheckFailed": "InvalidFirmwareSignature",
    # A correctly signed image below the rollback floor: an old image replayed.
    "FirmwareRollbackRefused": "AttemptedReplayAttacks",
    # The new slot failed its health check and the bootloader rebooted into the old one.
    "FirmwareUpdateRolledBack": "ResetOrReboot",
    # A URL from the CSMS the location policy forbids (ADR 0023): a message not to act on.
    "RemoteLocationRefused": "InvalidMessages",
}
_SEPARATOR = ": "


def on_the_wire(type: str, tech_info: str) -> tuple[str, str]:
    """The (type, techInfo) a SecurityEventNotification carries for event ``type``."""
    listed = CHARGEWARD_TYPES.get(type)
    if listed is None:
        return type, tech_info[:TECH_INFO_MAX]
    return listed, f"{type}{_SEPARATOR}{tech_info}"[:TECH_INFO_MAX]


def chargeward_event(type: str, tech_info: str | None) -> tuple[str, str | None]:
    """The event a received (type, techInfo) reports: Chargeward's own name and the detail
    when the listed type carries one of its names first in techInfo; else as received."""
    if type not in OCPP_TYPES or not tech_info:
        return type, tech_info
    name, sep, detail = tech_info.partition(_SEPARATOR)
    if CHARGEWARD_TYPES.get(name) == type and (sep or name == tech_info):
        return name, detail
    return type, tech_info
