"""What OCPP 1.6J (with and without the Security Whitepaper) and 2.0.1 call the same thing.

One table per value the CSMS and the reference station translate, both directions, so the
update, certificate and log logic is written once for 2.0.1 and a thin 1.6 adapter on each
side (``chargeward.ocpp.csms16``, ``chargeward.ocpp.station16``) maps names only.

    >>> connector_status_from_16("SuspendedEV"), connector_status_to_16("Occupied", charging=False)
    ('Occupied', 'Preparing')
    >>> legacy_firmware_status("InvalidSignature"), legacy_firmware_status("SignatureVerified")
    ('InstallationFailed', None)
"""

from __future__ import annotations

from urllib.parse import parse_qs, urldefrag, urlencode

from chargeward.errors import InvalidValue

SUBPROTOCOL_16 = "ocpp1.6"
# A legacy UpdateFirmware carries no signature: the CSMS puts the image's signature and
# signing certificate in the location's fragment, which an HTTP client never sends to the
# server (RFC 3986 3.5) and a third-party charger ignores; the reference agent reads them.
SIGNATURE_PARAM = "cw-signature"
CERTIFICATE_PARAM = "cw-certificate"
LEGACY_FRAGMENT_MAX = 8192  # a signature and one certificate; more is not read
SUBPROTOCOL_201 = "ocpp2.0.1"

# SignedFirmwareStatusNotification (whitepaper) has the statuses of 2.0.1's
# FirmwareStatusNotification, name for name.
SIGNED_FIRMWARE_STATUSES = frozenset(
    {
        "Downloaded",
        "DownloadFailed",
        "Downloading",
        "DownloadScheduled",
        "DownloadPaused",
        "Idle",
        "InstallationFailed",
        "Installing",
        "Installed",
        "InstallRebooting",
        "InstallScheduled",
        "InstallVerificationFailed",
        "InvalidSignature",
        "SignatureVerified",
    }
)
# Plain FirmwareStatusNotification (1.6 without the whitepaper): seven statuses, no requestId.
LEGACY_FIRMWARE_STATUSES = frozenset(
    {
        "Downloaded",
        "DownloadFailed",
        "Downloading",
        "Idle",
        "InstallationFailed",
        "Installing",
        "Installed",
    }
)
_LEGACY_FROM_201 = {
    "DownloadScheduled": None,  # not said: the download starts later
    "DownloadPaused": None,
    "SignatureVerified": None,  # a legacy charger verifies nothing of the image's origin
    "InstallScheduled": None,
    "InstallRebooting": "Installing",
    "InstallVerificationFailed": "InstallationFailed",
    "InvalidSignature": "InstallationFailed",
}

# 1.6 connector statuses (StatusNotification) -> 2.0.1 ConnectorStatusEnumType.
_CONNECTOR_FROM_16 = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": "Occupied",
    "SuspendedEVSE": "Occupied",
    "SuspendedEV": "Occupied",
    "Finishing": "Occupied",
    "Reserved": "Reserved",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}
CHARGING_16 = frozenset({"Charging", "SuspendedEVSE", "SuspendedEV"})  # a car draws or may draw

# 2.0.1 TriggerMessage requestedMessage -> 1.6 (Extended)TriggerMessage requestedMessage.
_TRIGGER_TO_16 = {
    "BootNotification": "BootNotification",
    "FirmwareStatusNotification": "FirmwareStatusNotification",
    "Heartbeat": "Heartbeat",
    "StatusNotification": "StatusNotification",
    "MeterValues": "MeterValues",
    "LogStatusNotification": "LogStatusNotification",
    "SignChargingStationCertificate": "SignChargePointCertificate",
}
EXTENDED_ONLY = frozenset({"LogStatusNotification", "SignChargePointCertificate"})


def signed_firmware_status(status: str) -> str:
    """A whitepaper SignedFirmwareStatusNotification status as 2.0.1's (the same names)."""
    if status not in SIGNED_FIRMWARE_STATUSES:
        raise InvalidValue(f"not a SignedFirmwareStatusNotification status: {status!r}")
    return status


def legacy_firmware_status(status: str) -> str | None:
    """The plain 1.6 FirmwareStatusNotification a legacy station sends for 2.0.1's
    ``status``; None when 1.6 has no word for it (the status is not sent)."""
    if status in LEGACY_FIRMWARE_STATUSES:
        return status
    if status not in _LEGACY_FROM_201:
        raise InvalidValue(f"not an OCPP 2.0.1 firmware status: {status!r}")
    return _LEGACY_FROM_201[status]


def connector_status_from_16(status: str) -> str:
    """A 1.6 StatusNotification status as 2.0.1's connector status."""
    try:
        return _CONNECTOR_FROM_16[status]
    except KeyError:
        raise InvalidValue(f"not an OCPP 1.6 connector status: {status!r}") from None


def connector_status_to_16(status: str, *, charging: bool) -> str:
    """2.0.1's connector status as 1.6 says it (``Occupied``: ``Charging`` while a session
    charges, else ``Preparing``)."""
    if status == "Occupied":
        return "Charging" if charging else "Preparing"
    if status not in ("Available", "Reserved", "Unavailable", "Faulted"):
        raise InvalidValue(f"not an OCPP 2.0.1 connector status: {status!r}")
    return status


def trigger_to_16(requested: str) -> str:
    """2.0.1's requestedMessage as 1.6's; InvalidValue when 1.6 cannot trigger it."""
    try:
        return _TRIGGER_TO_16[requested]
    except KeyError:
        raise InvalidValue(f"OCPP 1.6 cannot trigger {requested!r}") from None


def trigger_from_16(requested: str) -> str:
    """1.6's requestedMessage as 2.0.1's."""
    for ours, theirs in _TRIGGER_TO_16.items():
        if theirs == requested:
            return ours
    raise InvalidValue(f"not a triggerable OCPP 1.6 message: {requested!r}")


def legacy_location(location: str, signature: str, signing_certificate: str) -> str:
    """The UpdateFirmware location for a legacy station: ``location`` with the image's
    signature and signing certificate (PEM) in its fragment."""
    base, _ = urldefrag(location)
    params = {SIGNATURE_PARAM: signature, CERTIFICATE_PARAM: signing_certificate}
    return f"{base}#{urlencode(params)}"


def split_legacy_location(location: str) -> tuple[str, str | None, str | None]:
    """(location without its fragment, signature, signing certificate PEM); None for what
    the fragment does not carry (or a fragment over ``LEGACY_FRAGMENT_MAX``)."""
    base, fragment = urldefrag(location)
    if not fragment or len(fragment) > LEGACY_FRAGMENT_MAX:
        return base, None, None
    params = parse_qs(fragment, max_num_fields=4)

    def one(name: str) -> str | None:
        values = params.get(name, [])
        return values[0] if len(values) == 1 and values[0] else None

    return base, one(SIGNATURE_PARAM), one(CERTIFICATE_PARAM)
