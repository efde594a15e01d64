"""OCPP-J frames for fuzzing, built from the OCPP 2.0.1 JSON schemas the ``ocpp`` package ships.

Every strategy here makes frames that a peer must refuse: text that is not JSON, JSON that is
not an OCPP-J frame, calls of unknown actions, and calls of real actions whose payload is a
valid one (:data:`STATION_REQUESTS`, :data:`CSMS_REQUESTS`) mutated so that the schema cannot
accept it (a required field dropped, a value of the wrong type, a string over its
``maxLength``, nesting where a value belongs, a field the schema does not know) or no store
could keep it (a string with a NUL or half a surrogate pair)::

    frame = invalid_calls({"Heartbeat": {}}, "extra field").example()
    expected_reply(frame)
    # -> Reply(uid='...', answered=True)

:func:`expected_reply` says what OCPP-J (Part 4, 4.2) demands of the receiver: which message
id its CALLERROR carries, or that it must not answer at all (a CALLRESULT or CALLERROR is
never answered).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import ocpp
from hypothesis import strategies as st

SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"
MAX_UNIQUE_ID = 36
# Codes a CALLERROR may carry (OCPP-J 4.2.3); ``ocpp`` also spells one "FormationViolation".
# InternalError is missing on purpose: it means a handler failed, a bug in the receiver.
REFUSAL_CODES = frozenset(
    {
        "FormatViolation",
        "FormationViolation",
        "GenericError",
        "MessageTypeNotSupported",
        "NotImplemented",
        "NotSupported",
        "OccurrenceConstraintViolation",
        "OccurenceConstraintViolation",
        "PropertyConstraintViolation",
        "ProtocolError",
        "RpcFrameworkError",
        "SecurityError",
        "TypeConstraintViolation",
    }
)
# Nesting depths of a mutated value: past any real message, past the receiver's cap, and past
# the depth at which a recursive decoder or validator runs out of stack.
DEPTHS = (40, 300, 5_000, 40_000)
_MARK = "\0nested here\0"  # where a deep value is spliced into a payload's JSON text
TIME = "2026-01-05T10:00:00.000Z"


BOOT = {
    "reason": "PowerUp",
    "chargingStation": {"model": "AC22", "vendorName": "ACME", "firmwareVersion": "1.0.0"},
}
# A valid request of every action a station sends (the CSMS's handlers, then ones it has none
# for).
STATION_REQUESTS: dict[str, dict[str, Any]] = {
    "BootNotification": BOOT,
    "Heartbeat": {},
    "StatusNotification": {
        "timestamp": TIME,
        "connectorStatus": "Available",
        "evseId": 1,
        "connectorId": 1,
    },
    "FirmwareStatusNotification": {"status": "Installed", "requestId": 1},
    "SecurityEventNotification": {"type": "TamperDetectionActivated", "timestamp": TIME},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 1},
    "DataTransfer": {
        "vendorId": "org.chargeward",
        "messageId": "SecurityUpdateAvailable",
        "data": json.dumps({"target": "t", "version": "9.9.9", "security_version": 9}),
    },
    "TransactionEvent": {
        "eventType": "Started",
        "timestamp": TIME,
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "tx-1"},
        "evse": {"id": 1, "connectorId": 1},
    },
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
    "Authorize": {"idToken": {"idToken": "0123", "type": "ISO14443"}},
    "MeterValues": {
        "evseId": 1,
        "meterValue": [{"timestamp": TIME, "sampledValue": [{"value": 1.5}]}],
    },
    "NotifyEvent": {
        "generatedAt": TIME,
        "seqNo": 0,
        "eventData": [
            {
                "eventId": 1,
                "timestamp": TIME,
                "trigger": "Alerting",
                "actualValue": "1",
                "eventNotificationType": "HardWiredNotification",
                "component": {"name": "Connector"},
                "variable": {"name": "Problem"},
            }
        ],
    },
}
# A valid request of every action a CSMS sends to a charger (the agent's handlers, then ones
# it has none for), each harmless when valid; firmware and certificates are placeholders.
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CSMS_REQUESTS: dict[str, dict[str, Any]] = {
    "UpdateFirmware": {
        "requestId": 7,
        "firmware": {
            "location": "http://127.0.0.1:1/fw.cwfw",
            "retrieveDateTime": TIME,
            "signingCertificate": PEM,
            "signature": "c2lnbmF0dXJl",
        },
    },
    "TriggerMessage": {"requestedMessage": "Heartbeat"},
    "Reset": {"type": "Immediate"},
    "SetVariables": {
        "setVariableData": [
            {
                "attributeValue": "true",
                "component": {"name": "ChargingStation"},
                "variable": {"name": "AllowNewSessionsPendingFirmwareUpdate"},
            }
        ]
    },
    "GetLog": {
        "log": {"remoteLocation": "http://127.0.0.1:1/logs"},
        "logType": "SecurityLog",
        "requestId": 3,
    },
    "InstallCertificate": {"certificateType": "ManufacturerRootCertificate", "certificate": PEM},
    "DeleteCertificate": {
        "certificateHashData": {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": "00",
            "issuerKeyHash": "00",
            "serialNumber": "01",
        }
    },
    "GetInstalledCertificateIds": {"certificateType": ["ManufacturerRootCertificate"]},
    "CertificateSigned": {"certificateChain": PEM},
    "GetVariables": {"getVariableData": [{"component": {"name": "X"}, "variable": {"name": "Y"}}]},
    "ChangeAvailability": {"operationalStatus": "Inoperative"},
}


def frame(uid: str, action: str, payload: Any) -> str:
    return json.dumps([2, uid, action, payload])


def frame_text(uid: str, action: str, payload: str) -> str:
    """A CALL whose payload is given as JSON text (which may nest beyond ``json.dumps``)."""
    return f"[2, {json.dumps(uid)}, {json.dumps(action)}, {payload}]"


@cache
def request_schema(action: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / f"{action}Request.json").read_text(encoding="utf-8-sig")))


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


@dataclass(frozen=True)
class Slot:
    """A value in a payload (``path`` from the top) and the schema it must satisfy."""

    path: tuple[str | int, ...]
    schema: dict[str, Any]


def slots(action: str, payload: Any) -> list[Slot]:
    """Every value of ``payload`` that its request schema describes, the payload first."""
    root = request_schema(action)

    def walk(value: Any, schema: dict[str, Any], path: tuple[str | int, ...]) -> Iterator[Slot]:
        schema = _resolve(schema, root)
        yield Slot(path, schema)
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for key, item in value.items():
                if key in props and key != "customData":
                    yield from walk(item, props[key], (*path, key))
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                yield from walk(item, schema["items"], (*path, i))

    return list(walk(payload, root, ()))


def _replace(payload: Any, path: tuple[str | int, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(payload))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


def _drop(payload: Any, path: tuple[str | int, ...], key: str) -> Any:
    copy = json.loads(json.dumps(payload))
    target = copy
    for step in path:
        target = target[step]
    del target[key]
    return copy


_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=20),
    "integer": st.integers(-(2**70), 2**70),
    "fraction": st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
    "boolean": st.booleans(),
    "null": st.none(),
    "object": st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
    "array": st.lists(st.integers(), max_size=2),
}
# JSON types that a schema type does not accept (Draft 4: 1.0 is not an integer).
_WRONG = {
    "string": ("integer", "fraction", "boolean", "null", "object", "array"),
    "integer": ("string", "fraction", "boolean", "null", "object", "array"),
    "number": ("string", "boolean", "null", "object", "array"),
    "boolean": ("string", "integer", "fraction", "null", "object", "array"),
    "object": ("string", "integer", "fraction", "boolean", "null", "array"),
    "array": ("string", "integer", "fraction", "boolean", "null", "object"),
}


MUTATIONS = (
    "required field dropped",
    "wrong type",
    "string too long",
    "deep nesting",
    "extra field",
    "not text",  # valid for the schema; no database stores it
)


@dataclass(frozen=True)
class _Targets:
    """Where in a valid payload each mutation can strike."""

    typed: list[Slot]
    required: list[tuple[Slot, str]]
    bounded: list[Slot]
    closed: list[Slot]
    texts: list[Slot]  # free text, not an enumeration

    @classmethod
    def of(cls, action: str, valid: dict[str, Any]) -> _Targets:
        found = slots(action, valid)
        return cls(
            typed=[s for s in found if s.path and s.schema.get("type") in _WRONG],
            required=[
                (s, key)
                for s in found
                if s.schema.get("type") == "object"
                for key in s.schema.get("required", ())
                if _at(valid, s.path).get(key) is not None
            ],
            bounded=[s for s in found if "maxLength" in s.schema],
            texts=[
                s
                for s in found
                if s.path and s.schema.get("type") == "string" and "enum" not in s.schema
            ],
            closed=[  # enum types say additionalProperties: false too
                s
                for s in found
                if s.schema.get("type") == "object"
                and s.schema.get("additionalProperties") is False
            ],
        )

    def allow(self, mutation: str) -> bool:
        targets = {
            "required field dropped": self.required,
            "wrong type": self.typed,
            "string too long": self.bounded,
            "deep nesting": self.typed,
            "extra field": self.closed,
            "not text": self.texts,
        }
        return bool(targets[mutation])


def mutable(requests: dict[str, dict[str, Any]], mutation: str) -> list[str]:
    """The actions of ``requests`` (action: valid payload) that ``mutation`` applies to."""
    return sorted(a for a, valid in requests.items() if _Targets.of(a, valid).allow(mutation))


@st.composite
def invalid_payload(
    draw: st.DrawFn,
    action: str,
    valid: dict[str, Any],
    mutation: str,
    lengths: tuple[int, ...] = (1, 1_000),
) -> str:
    """``valid`` changed by ``mutation`` (one of :data:`MUTATIONS`) so that the schema of
    ``action`` refuses it (or, ``not text``, no store could keep it), as JSON text.  A string
    too long is over its ``maxLength`` by one of ``lengths`` characters."""
    at = _Targets.of(action, valid)
    if mutation == "required field dropped":
        slot, key = draw(st.sampled_from(at.required))
        return json.dumps(_drop(valid, slot.path, key))
    if mutation == "wrong type":
        slot = draw(st.sampled_from(at.typed))
        wrong = draw(st.sampled_from(_WRONG[slot.schema["type"]]))
        return json.dumps(_replace(valid, slot.path, draw(_SCALARS[wrong])))
    if mutation == "deep nesting":  # spliced in as text: too deep for json.dumps
        slot = draw(st.sampled_from(at.typed))
        depth = draw(st.sampled_from(DEPTHS))
        deep = "[" * depth + "]" * depth
        deep = deep if slot.schema["type"] != "array" else f"[{deep}]"
        return json.dumps(_replace(valid, slot.path, _MARK)).replace(json.dumps(_MARK), deep)
    if mutation == "string too long":
        slot = draw(st.sampled_from(at.bounded))
        extra = draw(st.sampled_from(lengths))
        char = draw(st.sampled_from('x"\\é\u2603'))
        return json.dumps(_replace(valid, slot.path, char * (slot.schema["maxLength"] + extra)))
    if mutation == "not text":
        slot = draw(st.sampled_from(at.texts))
        text = str(_at(valid, slot.path))[: slot.schema.get("maxLength", 1000) - 1]
        where = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from(["\x00", "\ud800", "\udfff"]))
        return json.dumps(_replace(valid, slot.path, text[:where] + bad + text[where:]))
    assert mutation == "extra field", mutation
    slot = draw(st.sampled_from(at.closed))
    known = set(slot.schema.get("properties", {}))
    key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in known))
    value = draw(st.one_of(*_SCALARS.values()))
    return json.dumps(_replace(valid, slot.path, {**_at(valid, slot.path), key: value}))


def _at(payload: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        payload = payload[step]
    return payload


def uids() -> st.SearchStrategy[str]:
    """Message ids: any text (no NUL, refused as such) up to the 36 characters allowed."""
    chars = st.characters(codec="utf-8", exclude_characters="\x00")
    return st.text(chars, min_size=1, max_size=MAX_UNIQUE_ID)


@st.composite
def invalid_calls(
    draw: st.DrawFn,
    requests: dict[str, dict[str, Any]],
    mutation: str,
    lengths: tuple[int, ...] = (1, 1_000),
) -> str:
    """CALLs of the actions of ``requests`` (action: valid payload) changed by ``mutation``."""
    action = draw(st.sampled_from(mutable(requests, mutation)))
    payload = draw(invalid_payload(action, requests[action], mutation, lengths))
    return frame_text(draw(uids()), action, payload)


def _parses(text: str | bytes) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def not_json() -> st.SearchStrategy[str | bytes]:
    """Text and binary frames that are not JSON, among them valid frames cut short."""
    cut = st.builds(
        lambda text, at: text[: at % len(text)],
        st.sampled_from(
            [frame("a", "Heartbeat", {}), '[3, "b", {}]', '[4, "c", "GenericError", "", {}]']
        ),
        st.integers(0, 100),
    )
    text = st.text(max_size=40).filter(lambda t: not _parses(t))
    binary = st.binary(max_size=40).filter(lambda b: not _parses(b))
    deep = st.integers(50_000, 100_000).map(lambda n: "[" * n)
    return st.one_of(cut, text, binary, deep)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


def _is_frame(value: Any) -> bool:
    shapes = {2: (int, str, str, dict), 3: (int, str, dict), 4: (int, str, str, str, dict)}
    if not isinstance(value, list) or not value or isinstance(value[0], bool):
        return False
    want = shapes.get(value[0]) if isinstance(value[0], int) else None
    return (
        want is not None
        and len(value) == len(want)
        and all(isinstance(v, t) for v, t in zip(value, want, strict=True))
        and len(value[1]) <= MAX_UNIQUE_ID
    )


def wrong_shapes() -> st.SearchStrategy[str]:
    """JSON that is not an OCPP-J frame: other values, arrays of the wrong length or types."""
    kinds = st.sampled_from([0, 1, 2, 3, 4, 5, -2, 2.0, "2", True, None, 2**64, [], {}])
    near = st.lists(_JSON, max_size=5).flatmap(lambda rest: kinds.map(lambda kind: [kind, *rest]))
    long_id = st.builds(
        lambda kind, uid: [kind, uid, "Heartbeat", {}] if kind == 2 else [kind, uid, {}],
        st.sampled_from([2, 3]),
        st.text(min_size=MAX_UNIQUE_ID + 1, max_size=200),
    )
    return st.one_of(_JSON, near, long_id).filter(lambda v: not _is_frame(v)).map(json.dumps)


def unknown_actions(known: frozenset[str]) -> st.SearchStrategy[str]:
    """Calls of actions that OCPP 2.0.1 does not have, with any payload."""
    action = st.text(max_size=40).filter(lambda a: a not in known)
    return st.builds(frame, uids(), action, st.dictionaries(st.text(max_size=6), _JSON, max_size=3))


def unsolicited_responses() -> st.SearchStrategy[str]:
    """CALLRESULTs and CALLERRORs that answer nothing the receiver asked."""
    result = st.builds(
        lambda uid, p: json.dumps([3, uid, p]),
        uids(),
        st.dictionaries(st.text(max_size=6), _JSON, max_size=3),
    )
    error = st.builds(
        lambda uid, code: json.dumps([4, uid, code, "", {}]),
        uids(),
        st.sampled_from(sorted(REFUSAL_CODES)),
    )
    return result | error


@dataclass(frozen=True)
class Reply:
    """What the receiver of a frame must do: answer with a CALLERROR for ``uid``, or not."""

    uid: str
    answered: bool


def expected_reply(raw: str | bytes) -> Reply:
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return Reply("-1", True)
    if not isinstance(msg, list) or not msg:
        return Reply("-1", True)
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else "-1"
    uid = uid if len(uid) <= MAX_UNIQUE_ID else "-1"
    kind = msg[0]
    answered = isinstance(kind, bool) or kind not in (3, 4)
    return Reply(uid, answered)


def actions() -> frozenset[str]:
    """Every OCPP 2.0.1 action."""
    return frozenset(p.name.removesuffix("Request.json") for p in SCHEMAS.glob("*Request.json"))


def seed_frames() -> list[str]:
    """A corpus to start coverage-guided fuzzing from: a valid request of each action either
    side sends, a CALLRESULT and a CALLERROR."""
    requests = {**STATION_REQUESTS, **CSMS_REQUESTS}
    seeds = [frame(f"m-{i}", action, p) for i, (action, p) in enumerate(requests.items())]
    return [*seeds, '[3, "r-1", {"status": "Accepted"}]', '[4, "r-2", "GenericError", "", {}]']


def dictionary() -> str:
    """A libFuzzer dictionary (``-dict=``) of OCPP-J tokens: JSON punctuation and values,
    message type ids, every action and error code, and a run of nested arrays."""
    tokens = ["[", "]", "{", "}", "[]", "{}", '""', ",", ":", "null", "true", "false"]
    tokens += ["2", "3", "4", "2.0", "-1", "1e400", "[" * 64, '"' + "x" * 40 + '"']
    tokens += [json.dumps(name) for name in sorted(actions() | REFUSAL_CODES)]
    return "".join(f"{json.dumps(t)}\n" for t in tokens)
