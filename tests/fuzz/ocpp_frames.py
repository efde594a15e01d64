"""Coverage-guided fuzzing (atheris, libFuzzer) of OCPP-J frame handling, in process.

Each input is one websocket message, text when it is UTF-8 and binary otherwise, given to the
``route_message`` of the charge points that receive frames: the CSMS's
(:class:`~chargeward.server.common.metrics.MeteredChargePoint`, as the listener runs it, once before
and once after its BootNotification) and the charger's
(:class:`~chargeward.ocpp.station.StationChargePoint`).  The CSMS side reports to a sink and
the charger side decides with a controller that only refuse; the connection collects what is
sent.  For every input and every receiver the only outcomes allowed are the ones OCPP-J
demands: one CALLERROR with a refusal code or one CALLRESULT, for the input's message id; no
answer at all to a CALLRESULT or CALLERROR.  Anything else, an exception escaping
``route_message`` or an error logged, stops the fuzzer with the input that caused it::

    $ .venv/bin/python -m tests.fuzz.ocpp_frames CORPUS -runs=20000 -seed=1

With ``$CHARGEWARD_FUZZ_TALLY`` set, the outcomes counted so far are kept in that file (JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections import Counter
from typing import Any

import atheris

with atheris.instrument_imports(
    include=["chargeward.ocpp", "chargeward.server.common.metrics", "ocpp"]
):
    from chargeward.crypto.pki import CertificateHashData
    from chargeward.ocpp.csms import SignAnswer, SignedChain
    from chargeward.ocpp.station import CertificateResult, InstalledCertificate, StationChargePoint
    from chargeward.server.common.metrics import MeteredChargePoint, Metrics

from tests.support.ocpp_frames import REFUSAL_CODES, expected_reply

LOOP = asyncio.new_event_loop()
METRICS = Metrics()
TALLY: Counter[str] = Counter()
FAULTS: list[str] = []


class _Faults(logging.Handler):
    """An error logged (a handler's own failure, answered InternalError) is a finding."""

    def emit(self, record: logging.LogRecord) -> None:
        FAULTS.append(record.getMessage()[:500])


class Sent:
    """A connection that keeps what is sent on it."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send(self, message: str) -> None:
        self.frames.append(message)


class Sink:
    """A CSMS that records nothing and refuses every CSR."""

    async def boot(self, *_: Any) -> None: ...
    async def heartbeat(self, *_: Any) -> None: ...
    async def connector_status(self, *_: Any) -> None: ...
    async def firmware_status(self, *_: Any) -> None: ...
    async def log_status(self, *_: Any) -> None: ...
    async def publish_status(self, *_: Any) -> None: ...
    async def security_event(self, *_: Any) -> None: ...
    async def update_available(self, *_: Any) -> None: ...
    async def owner_notification(self, *_: Any) -> None: ...
    async def transactions(self, *_: Any) -> None: ...

    async def check_csr(self, *_: Any) -> SignAnswer:
        return SignAnswer("Rejected", "fuzzing")

    async def sign_csr(self, *_: Any) -> SignedChain:
        raise AssertionError("no CSR is accepted")

    async def certificate_delivered(self, *_: Any) -> None: ...

    async def authorize(self, *_: Any) -> str:
        return "Accepted"

    async def meter_values(self, *_: Any) -> None: ...
    async def events(self, *_: Any) -> None: ...
    async def device_model(self, *_: Any) -> None: ...


class Controller:
    """A charger that refuses every request."""

    def update_firmware(self, *_: Any) -> str:
        return "Rejected"

    async def after_update_firmware(self, *_: Any) -> None: ...
    def trigger_status(self, *_: Any) -> str:
        return "Rejected"

    async def trigger(self, *_: Any) -> None: ...

    def reset(self, *_: Any) -> str:
        return "Rejected"

    async def after_reset(self, *_: Any) -> None: ...

    def install_certificate(self, *_: Any) -> CertificateResult:
        return CertificateResult("Rejected", "InvalidCertificate")

    def installed_certificates(self, *_: Any) -> list[InstalledCertificate]:
        return []

    def delete_certificate(self, hash_data: CertificateHashData) -> CertificateResult:
        return CertificateResult("NotFound")

    async def after_certificate_change(self, *_: Any) -> None: ...

    def get_log(self, *_: Any) -> tuple[str, str | None]:
        return "Rejected", None

    async def after_get_log(self, *_: Any) -> None: ...

    def set_variable(self, *_: Any) -> str:
        return "Rejected"

    def get_variable(self, *_: Any) -> tuple[str, str | None]:
        return "UnknownComponent", None

    def report(self, *_: Any) -> list[dict[str, Any]]:
        return []

    async def send_report(self, *_: Any) -> None: ...

    def publish_firmware(self, *_: Any) -> str:
        return "Rejected"

    async def after_publish_firmware(self, *_: Any) -> None: ...

    def unpublish_firmware(self, *_: Any) -> str:
        return "NoFirmware"

    def certificate_signed(self, *_: Any) -> CertificateResult:
        return CertificateResult("Rejected", "InvalidCertificate")

    async def after_certificate_signed(self, *_: Any) -> None: ...


def receivers(sent: Sent) -> dict[str, Any]:
    booted = MeteredChargePoint("CP-1", sent, Sink(), metrics=METRICS)
    booted.booted = True
    return {
        "csms": MeteredChargePoint("CP-1", sent, Sink(), metrics=METRICS),
        "csms booted": booted,
        "charger": StationChargePoint("CP-1", sent, Controller()),
    }


def check(raw: str | bytes, frames: list[str]) -> str:
    """The outcome of one frame: ``callerror``, ``callresult`` or ``silent``; raises if it
    is not one OCPP-J allows."""
    expected = expected_reply(raw)
    if not expected.answered:
        assert frames == [], f"answered a response: {frames}"
        return "silent"
    assert len(frames) == 1, f"{len(frames)} answers: {frames}"
    reply = json.loads(frames[0])
    assert reply[1] == expected.uid, f"answer for {reply[1]!r}, not {expected.uid!r}"
    if reply[0] == 3:
        assert len(reply) == 3 and isinstance(reply[2], dict), reply
        return "callresult"
    assert reply[0] == 4 and len(reply) == 5 and reply[2] in REFUSAL_CODES, reply
    return "callerror"


def test_one_input(data: bytes) -> None:
    try:
        raw: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        raw = data
    for name, receiver in receivers(sent := Sent()).items():
        sent.frames.clear()
        LOOP.run_until_complete(receiver.route_message(raw))
        LOOP.run_until_complete(asyncio.sleep(0))  # after-handlers run
        TALLY[f"{name} {check(raw, sent.frames)}"] += 1
    assert not FAULTS, FAULTS
    TALLY["inputs"] += 1
    _keep_tally()


def _keep_tally() -> None:
    path = os.environ.get("CHARGEWARD_FUZZ_TALLY")
    if path:  # rewritten each input: libFuzzer ends the process without Python's atexit
        with open(path, "w") as f:
            json.dump(dict(TALLY), f)


def _unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    FAULTS.append(str(context.get("exception") or context.get("message")))


def main() -> None:
    for name in ("chargeward", "ocpp", "asyncio"):
        logging.getLogger(name).addHandler(_Faults(logging.ERROR))
    logging.getLogger("chargeward").setLevel(logging.ERROR)  # refusals are warnings
    LOOP.set_exception_handler(_unhandled)
    asyncio.set_event_loop(LOOP)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
