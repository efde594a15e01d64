"""Fuzzed OCPP-J over real websockets: the CSMS refuses every bad frame a station sends.

Hypothesis generates the frames (tests/support/ocpp_frames.py): text that is not JSON, JSON
that is not an OCPP-J frame, unknown actions, and valid requests of real actions mutated so
that their schema refuses them, or so that no database could store them (a NUL character,
half a surrogate pair, a requestId past 32 bits; the CSMS runs on SQLite and PostgreSQL).
One connection carries many examples.  Each frame must get a CALLERROR for its message id
(a CALLRESULT or CALLERROR: no answer at all; a frame over the cap: close code 1009), never
a crash; a well-behaved station connected throughout is served all along, and what the
database holds about either station does not change.  Requests out of order (before the
BootNotification), runs of frames sharing a message id, replayed requests and a flood of
unsolicited responses are tried too.  What was tried goes to ``reports/fuzz/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from chargeward.limits import DEFAULT_SERVER_LIMITS
from tests.support.fuzzing import FuzzReport, fuzz
from tests.support.ocpp_frames import (
    BOOT,
    MUTATIONS,
    STATION_REQUESTS,
    actions,
    frame,
    invalid_calls,
    not_json,
    uids,
    unknown_actions,
    unsolicited_responses,
    wrong_shapes,
)
from tests.support.ocpp_peer import LoopThread, Outcome, Peer, check_refused
from tests.support.tls import Csms, TlsPki, running_csms, station_connection

pytestmark = pytest.mark.timeout(120)

PASSWORD = "fuzz-test-password-0123456"
# Refused until a BootNotification is accepted (OCPP B02.FR.09).
AFTER_BOOT = (
    "Heartbeat",
    "StatusNotification",
    "FirmwareStatusNotification",
    "LogStatusNotification",
    "DataTransfer",
    "TransactionEvent",
    "SignCertificate",
)
MAX_FRAME = DEFAULT_SERVER_LIMITS.frame_bytes  # the server's frame cap
LENGTHS = (1, 1_000, MAX_FRAME)  # over maxLength by: the last makes the frame too big
FLOOD = 1500  # unsolicited responses, more than the ocpp package's recursion could take
REPLAYS = 20


def station_frames() -> dict[str, tuple[int, st.SearchStrategy[str | bytes]]]:
    """Examples and frames for every kind of input a station may get wrong."""
    kinds: dict[str, tuple[int, st.SearchStrategy[str | bytes]]] = {
        "not json": (30, not_json()),
        "wrong shape": (40, wrong_shapes()),
        "unknown action": (20, unknown_actions(actions())),
        "unsolicited response": (20, unsolicited_responses()),
    }
    for mutation in MUTATIONS:
        kinds[mutation] = (40, invalid_calls(STATION_REQUESTS, mutation, LENGTHS))
    return kinds


class Stations:
    """The fuzzed station and a well-behaved one, both connected to ``csms`` over TLS."""

    def __init__(self, loop: LoopThread, csms: Csms, pki: TlsPki) -> None:
        self.loop, self.csms, self.pki = loop, csms, pki
        for station_id in ("CP-FUZZ", "CP-GOOD"):
            loop.run(csms.add_station(station_id, PASSWORD, 2))
        self.good = self.connect("CP-GOOD")
        self.fuzzed = self.connect("CP-FUZZ")
        self.reconnects = 0
        self.heartbeats = 0

    def connect(self, station_id: str) -> Peer:
        ws = self.loop.enter(
            station_connection(
                self.csms.url, station_id, PASSWORD, ssl_context=self.pki.client_context()
            )
        )

        async def start() -> Peer:
            return Peer(ws, answer=lambda action, payload: {"status": "Accepted"}).start()

        return self.loop.run(start())

    def send(self, raw: str | bytes) -> Outcome:
        outcome = self.loop.run(self.fuzzed.exchange(raw))
        if outcome.kind == "closed":
            self.fuzzed = self.connect("CP-FUZZ")
            self.reconnects += 1
        return outcome

    def good_heartbeat(self) -> None:
        self.heartbeats += 1
        outcome = self.loop.run(self.good.call(f"hb-{self.heartbeats}", "Heartbeat", {}))
        assert outcome.kind == "callresult" and "currentTime" in (outcome.reply or [])[2]

    def state(self, station_id: str) -> dict[str, Any]:
        return self.loop.run(self.csms.station_state(station_id))


def test_fuzzed_station_frames_are_refused_and_harmless(
    tmp_path: Path, tls_pki: TlsPki, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    backend = database_url.partition(":")[0].partition("+")[0]
    report = FuzzReport(f"csms_frames_{backend}")
    planned: dict[str, int] = {}
    ran: dict[str, int] = {}
    with LoopThread() as loop:
        csms = loop.enter(running_csms(tmp_path / "srv", tls_pki, database_url=database_url))
        stations = Stations(loop, csms, tls_pki)
        assert loop.run(stations.good.call("boot", "BootNotification", BOOT)).kind == "callresult"
        good_before = stations.state("CP-GOOD")
        fresh = stations.state("CP-FUZZ")

        def before_boot(case: tuple[str, str]) -> None:
            action, uid = case
            outcome = stations.send(frame(uid, action, STATION_REQUESTS[action]))
            report.count("before boot", outcome.kind)
            assert outcome.kind == "callerror" and outcome.reply is not None
            assert (outcome.reply[1], outcome.reply[2]) == (uid, "SecurityError")

        planned["before boot"] = 40
        ran["before boot"] = fuzz(40, st.tuples(st.sampled_from(AFTER_BOOT), uids()), before_boot)
        assert stations.state("CP-FUZZ") == fresh  # nothing recorded before the boot

        boot = frame("boot-1", "BootNotification", BOOT)
        accepted = stations.send(boot)
        assert accepted.kind == "callresult" and accepted.reply is not None
        assert accepted.reply[2]["status"] == "Accepted"
        booted = stations.state("CP-FUZZ")
        assert booted["firmware_version"] == "1.0.0"

        for kind, (examples, strategy) in station_frames().items():

            def refused(raw: str | bytes, kind: str = kind) -> None:
                outcome = stations.send(raw)
                report.count(kind, outcome.kind)
                check_refused(raw, outcome, MAX_FRAME)
                stations.good_heartbeat()  # served all along

            planned[kind] = examples
            ran[kind] = fuzz(examples, strategy, refused)

        def request_id_over_32_bits(case: tuple[str, int]) -> None:
            # Valid for the schema, but an OCPP integer has 32 bits, and the id names a row.
            action, request_id = case
            raw = frame("rid", action, {**STATION_REQUESTS[action], "requestId": request_id})
            outcome = stations.send(raw)
            report.count("request id over 32 bits", outcome.kind)
            assert outcome.reply is not None and outcome.reply[2] == "TypeConstraintViolation"

        beyond = st.integers(2**31, 2**80) | st.integers(-(2**80), -(2**31) - 1)
        actions_with_ids = st.sampled_from(["FirmwareStatusNotification", "LogStatusNotification"])
        planned["request id over 32 bits"] = 20
        ran["request id over 32 bits"] = fuzz(
            20, st.tuples(actions_with_ids, beyond), request_id_over_32_bits
        )

        def same_message_id(case: tuple[str, list[str]]) -> None:
            # Each frame of a run sharing one message id gets its own CALLERROR, in order.
            uid, chosen = case
            for action in chosen:
                raw = frame(uid, action, {**STATION_REQUESTS[action], "notInTheSchema": 1})
                outcome = stations.send(raw)
                report.count("same message id", outcome.kind)
                check_refused(raw, outcome, MAX_FRAME)

        runs = st.tuples(uids(), st.lists(st.sampled_from(sorted(STATION_REQUESTS)), min_size=2))
        planned["same message id"] = 30
        ran["same message id"] = fuzz(30, runs, same_message_id)
        assert stations.state("CP-FUZZ") == booted  # no bad frame changed anything

        # A request sent again, message id and all, is answered again like the first.
        for raw in [boot, frame("hb-1", "Heartbeat", {})] * (REPLAYS // 2):
            outcome = stations.send(raw)
            report.count("replayed", outcome.kind)
            assert outcome.kind == "callresult" and outcome.reply is not None
            assert outcome.reply[1] == json.loads(raw)[1]
        after = stations.state("CP-FUZZ")
        for field in ("firmware_version", "model", "vendor", "reported_firmware", "updates"):
            assert after[field] == booted[field], field
        assert after["firmware_statuses"] == booted["firmware_statuses"] == []

        # Unsolicited responses are dropped, not kept for the next call to that station.
        for i in range(FLOOD):
            loop.run(stations.fuzzed.ws.send(json.dumps([3, f"stale-{i}", {}])))
        assert loop.run(stations.fuzzed.exchange('[3, "last", {}]')).kind == "silent"
        report.count("unsolicited response", "silent", FLOOD + 1)
        cp = stations.csms.registry.get("CP-FUZZ")
        assert cp is not None
        assert loop.run(asyncio.wait_for(cp.trigger_message("Heartbeat"), 10)) == "Accepted"

        stations.good_heartbeat()
        assert stations.state("CP-GOOD") == good_before

    report.write(reconnects=stations.reconnects, good_heartbeats=stations.heartbeats)
    assert ran == planned  # every example ran: none was filtered away or skipped
    assert report.inputs["same message id"] >= 2 * planned["same message id"]
    assert report.tried >= sum(planned.values()) + REPLAYS + FLOOD
    assert stations.reconnects == report.outcomes["closed"] > 0  # only frames over the cap
    errors = [r.getMessage()[:300] for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
