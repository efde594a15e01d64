"""What happens to the upstream CSMS's firmware commands: a pure decision, no I/O.

Per station, one of ``relay`` (passed to the station as sent), ``refuse`` (answered
``Rejected`` by Chargeward and audited) or ``approved-only`` (passed on only when the image is
one of a release Chargeward has approved; otherwise refused and audited)::

    >>> approved = ApprovedImages(signatures=frozenset({"c2ln"}))
    >>> decide(FirmwarePolicy.approved_only, "UpdateFirmware",
    ...        {"requestId": 1, "firmware": {"location": "https://x/f", "signature": "c2ln"}},
    ...        approved).relay
    True
    >>> decide(FirmwarePolicy.refuse, "PublishFirmware", {}, approved).reason
    'policy refuse'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

_SHA256 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


class FirmwarePolicy(StrEnum):
    relay = "relay"
    refuse = "refuse"
    approved_only = "approved-only"


@dataclass(frozen=True)
class ApprovedImages:
    """The images of approved (published) releases: their signatures (base64, as sent in
    UpdateFirmware), SHA-256 digests (hex) and MD5 checksums (hex, PublishFirmware's)."""

    signatures: frozenset[str] = frozenset()
    sha256: frozenset[str] = frozenset()
    md5: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    relay: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _image_matches(action: str, payload: dict[str, Any], approved: ApprovedImages) -> bool:
    if action == "PublishFirmware":
        checksum = payload.get("checksum")
        return isinstance(checksum, str) and checksum.lower() in approved.md5
    firmware = payload.get("firmware")
    if isinstance(firmware, dict):  # 2.0.1 UpdateFirmware, 1.6 SignedUpdateFirmware
        signature = firmware.get("signature")
        return isinstance(signature, str) and signature in approved.signatures
    # 1.6 plain UpdateFirmware: no signature; only a location naming an approved image's
    # SHA-256 (Chargeward's own download URLs do: /firmware/sha256/{digest}).
    location = payload.get("location")
    if not isinstance(location, str):
        return False
    return any(d in approved.sha256 for d in _SHA256.findall(location.lower()))


def location_of(payload: dict[str, Any]) -> str | None:
    firmware = payload.get("firmware")
    value = firmware.get("location") if isinstance(firmware, dict) else payload.get("location")
    return value[:512] if isinstance(value, str) else None


def decide(
    policy: FirmwarePolicy, action: str, payload: Any, approved: ApprovedImages | None
) -> Decision:
    """Whether the upstream's firmware command ``action`` goes to the station."""
    body = payload if isinstance(payload, dict) else {}
    details = {"action": action, "location": location_of(body), "policy": policy.value}
    if policy is FirmwarePolicy.relay:
        return Decision(True, details=details)
    if policy is FirmwarePolicy.refuse:
        return Decision(False, "policy refuse", details)
    if approved is not None and _image_matches(action, body, approved):
        return Decision(True, details=details)
    return Decision(False, "image is not of an approved release", details)


def refusal(version: str, action: str) -> dict[str, Any] | None:
    """The CALLRESULT payload that refuses ``action``; None where the response has no status
    (1.6 UpdateFirmware.conf is empty: refused with a CALLERROR instead)."""
    if version == "1.6" and action == "UpdateFirmware":
        return None
    return {"status": "Rejected"}
