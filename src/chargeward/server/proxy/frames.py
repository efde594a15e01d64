"""OCPP-J frames as the relay sees them: kind, message id, action; and which actions go where.

The relay passes frames on as the bytes it received; it parses them only to route them::

    >>> f = Frame.parse('[2,"42","Heartbeat",{}]')
    >>> f.kind, f.message_id, f.action
    (2, '42', 'Heartbeat')
    >>> Frame.parse("[3,") is None
    True
    >>> with_message_id('[3,"cw-1",{"status":"Accepted"}]', "abc")
    '[3, "abc", {"status": "Accepted"}]'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chargeward.ocpp.base import VENDOR_ID

CALL, CALLRESULT, CALLERROR = 2, 3, 4
OWN_PREFIX = "cw-"  # Chargeward's own CALLs to a station (OCPP-J: messageId <= 36 chars)

# What the upstream must answer and the station keeps when offline (OCPP 2.0.1 E12, 1.6
# section 4.1.8): answered by Chargeward and queued while the upstream is away or catching up.
QUEUED = {
    "2.0.1": frozenset({"BootNotification", "TransactionEvent", "MeterValues"}),
    "1.6": frozenset({"BootNotification", "StartTransaction", "StopTransaction", "MeterValues"}),
}
# The upstream's firmware commands, subject to the station's firmware policy.
FIRMWARE_COMMANDS = frozenset({"UpdateFirmware", "SignedUpdateFirmware", "PublishFirmware"})
# The station's certificate is for its leg to Chargeward (profile 3 ends here): Chargeward alone
# answers SignCertificate, and the certificate it signs comes back over the same leg.
LOCAL_ONLY = frozenset({"SignCertificate"})


@dataclass(frozen=True)
class Frame:
    """One parsed OCPP-J frame; ``raw`` is the text as it came."""

    raw: str
    kind: int
    message_id: str
    action: str | None  # CALL only
    payload: Any

    @classmethod
    def parse(cls, raw: str | bytes) -> Frame | None:
        """The frame, or None when ``raw`` is not an OCPP-J frame (the charge point answers
        those itself, as it does without a proxy)."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            return None
        kind = msg[0]
        if kind == CALL and len(msg) == 4 and isinstance(msg[2], str):
            return cls(text, CALL, msg[1], msg[2], msg[3])
        if kind == CALLRESULT and len(msg) == 3:
            return cls(text, CALLRESULT, msg[1], None, msg[2])
        if kind == CALLERROR and len(msg) == 5:
            return cls(text, CALLERROR, msg[1], None, msg[2:])
        return None

    @property
    def local_only(self) -> bool:
        """A station CALL only Chargeward answers (never relayed)."""
        if self.action in LOCAL_ONLY:
            return True
        own = isinstance(self.payload, dict) and self.payload.get("vendorId") == VENDOR_ID
        return self.action == "DataTransfer" and own  # Chargeward's vendor messages


def with_message_id(raw: str, message_id: str) -> str:
    """``raw`` (a well-formed frame) with another message id."""
    msg = json.loads(raw)
    msg[1] = message_id
    return json.dumps(msg)


def with_payload(raw: str, payload: dict[str, Any]) -> str:
    """``raw`` (a well-formed CALL) with another payload."""
    msg = json.loads(raw)
    msg[3] = payload
    return json.dumps(msg)


def transaction_id_of(payload: Any) -> int | None:
    """A 1.6 payload's ``transactionId`` (StartTransaction.conf, StopTransaction,
    MeterValues), or None."""
    value = payload.get("transactionId") if isinstance(payload, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def call_result(message_id: str, payload: dict[str, Any]) -> str:
    return json.dumps([CALLRESULT, message_id, payload])


def call_error(message_id: str, code: str, description: str) -> str:
    return json.dumps([CALLERROR, message_id, code, description, {}])


class OwnIds:
    """Message ids of Chargeward's own CALLs to a station: ``cw-`` and a counter, mapped to
    and from the ids the charge point chose (the ``ocpp`` library's UUIDs, 36 characters, leave
    no room for a prefix).  An id the upstream uses is never handed out."""

    def __init__(self) -> None:
        self._next = 0
        self._theirs: dict[str, str] = {}  # ours -> the charge point's

    def issue(self, cp_id: str, in_use: set[str]) -> str:
        while True:
            self._next += 1
            ours = f"{OWN_PREFIX}{self._next}"
            if ours not in in_use:
                self._theirs[ours] = cp_id
                return ours

    def take(self, ours: str) -> str | None:
        """The charge point's id for a reply to ``ours``, once; None if not one of ours."""
        return self._theirs.pop(ours, None)

    def __contains__(self, ours: object) -> bool:
        return ours in self._theirs
