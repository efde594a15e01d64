"""A fuzzing CSMS against the real charger agent, over a real websocket on 127.0.0.1.

The agent connects to a CSMS (tests/support/agent_harness.py) whose first connection is a raw
OCPP-J peer: it answers the charger's BootNotification and reports, and sends it frames that
are not JSON or not OCPP-J, unknown actions, requests of real actions mutated against their
schema, and UpdateFirmware requests that are valid OCPP but name a bad URL, a bad signing
certificate, a bad date or a bad signature (the image itself is served, so the signature is
really checked).  Every frame gets a CALLERROR or a refusal (``Rejected``,
``InvalidCertificate``, or ``InvalidSignature`` once downloaded), never a crash; what the
charger keeps on flash (A/B slots, boot control, trust store, settings) is unchanged, and it
answers valid calls afterwards.  What was tried goes to ``reports/fuzz/agent_frames.json``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection

from chargeward.agent.agent import Agent
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.crypto import certificate_pem
from chargeward.limits import DEFAULT_AGENT_LIMITS
from chargeward.ocpp.base import ocpp_time
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import PASSWORD, Csms, running_agent, running_csms
from tests.support.fleet import MODEL, Pki
from tests.support.fuzzing import FuzzReport, fuzz
from tests.support.ocpp_frames import (
    CSMS_REQUESTS,
    MUTATIONS,
    actions,
    frame,
    invalid_calls,
    not_json,
    unknown_actions,
    unsolicited_responses,
    wrong_shapes,
)
from tests.support.ocpp_peer import LoopThread, Outcome, Peer, check_refused
from tests.support.tufrepo import Clock, TufRepo

pytestmark = pytest.mark.timeout(120)

MAX_FRAME = DEFAULT_AGENT_LIMITS.frame_bytes  # the agent's frame cap
BAD_URLS = (
    "",
    "not a url",
    "file:///etc/passwd",
    "ftp://127.0.0.1/fw.bin",
    "javascript:alert(1)",
    "http://",
    "http:///fw.bin",
    "http://[::1/fw.bin",
    "http://\x00/fw.bin",
    "http://127.0.0.1:99999/fw.bin",
    "https://256.256.256.256/fw.bin",
    "//127.0.0.1/fw.bin",
)


def _datetime(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


BAD_TIMES = st.one_of(
    st.text(max_size=30).filter(lambda t: _datetime(t) is None),  # not a date-time
    st.datetimes().map(dt.datetime.isoformat),  # no offset
    st.integers(1, 14).map(lambda h: f"0001-01-01T00:00:00+{h:02}:00"),  # before year 1 in UTC
    st.integers(1, 14).map(lambda h: f"9999-12-31T23:59:59-{h:02}:00"),  # after year 9999
)


@pytest.fixture(scope="module")
def update(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> VerifiedBundle:
    d = tmp_path_factory.mktemp("fuzz-update")
    return verify_bundle(pki.bundle(d / "u.cwb", "1.1.0", 2), [pki.root_cert], workdir=d / "u")


def csms_requests(update: VerifiedBundle, location: str) -> dict[str, dict[str, Any]]:
    """The valid CSMS requests, with the update's real signature and certificate."""
    pem = update.signing_certificate_pem
    firmware = {
        **CSMS_REQUESTS["UpdateFirmware"]["firmware"],
        "location": location,
        "signingCertificate": pem,
        "signature": update.primary.signature,
    }
    return {
        **CSMS_REQUESTS,
        "UpdateFirmware": {**CSMS_REQUESTS["UpdateFirmware"], "firmware": firmware},
        "InstallCertificate": {**CSMS_REQUESTS["InstallCertificate"], "certificate": pem},
        "CertificateSigned": {"certificateChain": pem},
    }


def _signature_bytes(signature: str) -> bytes | None:
    try:
        return base64.b64decode(signature)
    except (binascii.Error, ValueError):
        return None


def bad_signatures(valid: str) -> st.SearchStrategy[str]:
    """Signatures other than ``valid``: edited, cut, random or not base64 at all."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    edited = st.builds(
        lambda at, c: valid[:at] + c + valid[at + 1 :],
        st.integers(0, len(valid) - 5),
        st.sampled_from(alphabet),
    )
    cut = st.integers(4, len(valid) - 4).map(lambda n: valid[:n])
    random = st.text(alphabet, min_size=4, max_size=800)
    garbage = st.text(min_size=1, max_size=100)
    mine = _signature_bytes(valid)
    return st.one_of(edited, cut, random, garbage).filter(lambda s: _signature_bytes(s) != mine)


def flash(state: StateDir) -> dict[str, str]:
    """A digest of every file the charger keeps, but the records of what it did: its
    security log and the last firmware status it sent."""
    return {
        p.relative_to(state.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(state.root.rglob("*"))
        if p.is_file()
        and p.relative_to(state.root).parts[0] != "log"
        and p.relative_to(state.root).as_posix() != "status.json"
    }


class FuzzingCsms:
    """The CSMS end: its first connection is a :class:`Peer` driven by the test."""

    def __init__(self, loop: LoopThread, clock: Clock) -> None:
        self.loop, self.clock = loop, clock
        self.peer: Peer | None = None
        self.csms: Csms = loop.enter(running_csms(self._first_connection))

    async def _first_connection(self, ws: ServerConnection) -> None:
        self.peer = Peer(ws, answer=self._answer, calls=self.csms.calls).start()
        await ws.wait_closed()

    def _answer(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        now = ocpp_time(self.clock())
        answers: dict[str, dict[str, Any]] = {
            "BootNotification": {"currentTime": now, "interval": 300, "status": "Accepted"},
            "Heartbeat": {"currentTime": now},
            "DataTransfer": {"status": "Accepted"},
        }
        return answers.get(action, {})

    def send(self, raw: str | bytes) -> Outcome:
        assert self.peer is not None
        return self.loop.run(self.peer.exchange(raw))

    def statuses(self, request_id: int) -> list[str]:
        return [
            b["status"]
            for b in self.csms.of("FirmwareStatusNotification")
            if b.get("requestId") == request_id
        ]

    def final_status(self, request_id: int) -> str:
        final = {"InvalidSignature", "DownloadFailed", "InstallVerificationFailed", "Installed"}
        found = self.loop.run(
            self.csms.wait(
                lambda: [s for s in self.statuses(request_id) if s in final],
                f"the final status of request {request_id}",
            )
        )
        return str(found[0])


async def until_idle(agent: Agent, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while agent.updating:
        assert asyncio.get_running_loop().time() < deadline, "the update did not end"
        await asyncio.sleep(0.01)


@pytest.fixture
def charger(tmp_path: Path, pki: Pki, factory_bundle: Path) -> StateDir:
    provision(
        tmp_path / "charger",
        identity=Identity("CP-FUZZ", MODEL, "T", "CP-FUZZ"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory_bundle,
    )
    return StateDir(tmp_path / "charger")


@pytest.fixture
def files(update: VerifiedBundle) -> Iterator[TufRepo]:
    """A plain HTTP file server on 127.0.0.1 with the update image."""
    with TufRepo() as server:
        server.serve("fw/u.cwfw", update.images[0].file.read_bytes())
        yield server


def test_fuzzing_csms_cannot_crash_the_agent_or_touch_its_flash(
    charger: StateDir,
    update: VerifiedBundle,
    other_pki: Pki,
    files: TufRepo,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    report = FuzzReport("agent_frames")
    planned: dict[str, int] = {}
    ran: dict[str, int] = {}
    clock = Clock()
    image = files.url + "fw/u.cwfw"
    requests = csms_requests(update, image)
    before = flash(charger)
    with LoopThread() as loop:
        fake = FuzzingCsms(loop, clock)
        agent = loop.enter(running_agent(charger, fake.csms, clock, None))
        loop.run(fake.csms.wait(lambda: fake.csms.of("StatusNotification"), "start-up"))

        groups: dict[str, tuple[int, st.SearchStrategy[str | bytes]]] = {
            "not json": (30, not_json()),
            "wrong shape": (40, wrong_shapes()),
            "unknown action": (20, unknown_actions(actions())),
            "unsolicited response": (20, unsolicited_responses()),
        }
        for mutation in MUTATIONS:
            groups[mutation] = (30, invalid_calls(requests, mutation))
        for kind, (examples, strategy) in groups.items():

            def refused(raw: str | bytes, kind: str = kind) -> None:
                outcome = fake.send(raw)
                report.count(kind, outcome.kind)
                check_refused(raw, outcome, MAX_FRAME)

            planned[kind] = examples
            ran[kind] = fuzz(examples, strategy, refused)

        firmware = requests["UpdateFirmware"]["firmware"]
        request_ids = iter(range(100, 10_000))

        def update_firmware(kind: str, changes: dict[str, Any], want: str) -> str:
            rid = next(request_ids)
            payload = {"requestId": rid, "retries": 0, "firmware": {**firmware, **changes}}
            outcome = fake.send(frame(f"uf-{rid}", "UpdateFirmware", payload))
            assert outcome.kind == "callresult" and outcome.reply is not None, outcome
            status = str(outcome.reply[2]["status"])
            if status == "Accepted":  # refused once downloaded: wait for the verdict
                status = fake.final_status(rid)
                # ... and for the update to end (its security event sent): the next request
                # must not find it still running and cancel it (AcceptedCanceled).
                loop.run(until_idle(agent))
            report.count(kind, status)
            assert status == want, (changes, status)
            return status

        url_kinds = st.one_of(
            st.sampled_from(BAD_URLS),
            st.builds(
                lambda scheme, rest: f"{scheme}:{rest}",
                st.sampled_from(["ftp", "file", "gopher", "data", "ws", "mailto"]),
                st.text(max_size=40),
            ),
            st.integers(65536, 10**6).map(lambda port: f"http://127.0.0.1:{port}/fw.bin"),
        )
        certificates = st.one_of(
            st.sampled_from(
                [
                    "",
                    "not a certificate",
                    firmware["signingCertificate"][:200],
                    other_pki.root_pem.read_text(),  # a CA, and not the charger's
                    certificate_pem(other_pki.signing_cert),  # another manufacturer's
                ]
            ),
            st.text(max_size=300),
        )
        cases: dict[str, tuple[int, st.SearchStrategy[Any], str, str]] = {
            "UpdateFirmware: bad location": (30, url_kinds, "location", "Rejected"),
            "UpdateFirmware: bad date": (
                10,
                BAD_TIMES,
                "retrieveDateTime",
                "Rejected",
            ),
            "UpdateFirmware: bad certificate": (
                20,
                certificates,
                "signingCertificate",
                "InvalidCertificate",
            ),
            "UpdateFirmware: bad signature": (
                20,
                bad_signatures(firmware["signature"]),
                "signature",
                "InvalidSignature",
            ),
        }
        for kind, (examples, strategy, field, want) in cases.items():

            def refusal(value: Any, kind: str = kind, field: str = field, want: str = want) -> None:
                update_firmware(kind, {field: value}, want)

            planned[kind] = examples
            ran[kind] = fuzz(examples, strategy, refusal)
        unreachable = "http://127.0.0.1:1/fw.bin"
        update_firmware("UpdateFirmware: unreachable", {"location": unreachable}, "DownloadFailed")

        # Still a working charger on the same connection: valid calls are answered.
        heartbeats = len(fake.csms.of("Heartbeat"))
        outcome = fake.send(frame("ok-1", "TriggerMessage", {"requestedMessage": "Heartbeat"}))
        assert outcome.reply is not None and outcome.reply[2] == {"status": "Accepted"}
        loop.run(fake.csms.wait(lambda: len(fake.csms.of("Heartbeat")) > heartbeats, "Heartbeat"))
        outcome = fake.send(frame("ok-2", "GetInstalledCertificateIds", {}))
        assert outcome.reply is not None and outcome.reply[2]["status"] == "Accepted"
        report.count("valid", outcome.kind, 2)

        # A frame over the cap closes the connection; the charger comes back on a new one.
        oversized = frame("big", "Reset", {"type": "Immediate", "x": "x" * MAX_FRAME})
        outcome = fake.send(oversized)
        report.count("over the cap", outcome.kind)
        assert (outcome.kind, outcome.close_code) == ("closed", 1009)
        reports = len(fake.csms.of("StatusNotification"))
        loop.run(fake.csms.wait(lambda: len(fake.csms.of("StatusNotification")) > reports, "back"))
        assert loop.run(fake.csms.set_variable("ChargingStation", "Nothing", "1")) == (
            "UnknownVariable"
        )
        assert fake.csms.of("BootNotification")[1:] == []  # reconnected, never rebooted

    report.write()
    assert ran == planned  # every example ran: none was filtered away or skipped
    assert report.tried == sum(planned.values()) + 4
    assert flash(charger) == before  # slots, boot control, trust store, settings
    assert not any(charger.downloads.iterdir())  # refused downloads are removed
    errors = [r.getMessage()[:300] for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
