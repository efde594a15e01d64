"""The relay's pure parts: frame parsing, Chargeward's own message ids, the firmware policy,
the bounded queue and where the upstream leg goes with which credentials (ADR 0040)."""

from __future__ import annotations

import base64

import pytest
from websockets.datastructures import Headers

from chargeward.errors import ConfigError
from chargeward.server.proxy.frames import Frame, OwnIds, with_message_id
from chargeward.server.proxy.policy import ApprovedImages, FirmwarePolicy, decide, refusal
from chargeward.server.proxy.queue import Pending, UpstreamQueue
from chargeward.server.proxy.upstream import CredentialMode, ProxyConfig

APPROVED = ApprovedImages(
    signatures=frozenset({"c2ln"}), sha256=frozenset({"ab" * 32}), md5=frozenset({"cd" * 16})
)


def test_frames_parse_only_the_ocpp_j_shapes() -> None:
    assert Frame.parse('[2,"1","Heartbeat",{}]') == Frame(
        '[2,"1","Heartbeat",{}]', 2, "1", "Heartbeat", {}
    )
    assert Frame.parse('[3,"1",{}]') is not None and Frame.parse('[4,"1","E","d",{}]') is not None
    for bad in ("[", "{}", '[2,1,"Heartbeat",{}]', '[5,"1",{}]', '[2,"1",{}]'):
        assert Frame.parse(bad) is None, bad


def test_chargewards_vendor_messages_and_csrs_stay_local() -> None:
    own = Frame.parse('[2,"1","DataTransfer",{"vendorId":"org.chargeward"}]')
    other = Frame.parse('[2,"1","DataTransfer",{"vendorId":"com.acme"}]')
    csr = Frame.parse('[2,"1","SignCertificate",{"csr":"x"}]')
    assert own is not None and own.local_only
    assert other is not None and not other.local_only
    assert csr is not None and csr.local_only


def test_own_ids_never_collide_with_the_upstreams_and_map_back_once() -> None:
    ids = OwnIds()
    ours = ids.issue("uuid-1", in_use={"cw-1"})
    assert ours == "cw-2" and ours in ids
    assert ids.take(ours) == "uuid-1" and ids.take(ours) is None
    assert with_message_id('[3,"cw-2",{}]', "uuid-1") == '[3, "uuid-1", {}]'


@pytest.mark.parametrize(
    ("policy", "action", "payload", "relay"),
    [
        (FirmwarePolicy.relay, "UpdateFirmware", {"firmware": {"signature": "x"}}, True),
        (FirmwarePolicy.refuse, "UpdateFirmware", {"firmware": {"signature": "c2ln"}}, False),
        (FirmwarePolicy.approved_only, "UpdateFirmware", {"firmware": {"signature": "c2ln"}}, True),
        (
            FirmwarePolicy.approved_only,
            "SignedUpdateFirmware",
            {"firmware": {"signature": "eA=="}},
            False,
        ),
        (FirmwarePolicy.approved_only, "PublishFirmware", {"checksum": "CD" * 16}, True),
        (FirmwarePolicy.approved_only, "PublishFirmware", {"checksum": "00" * 16}, False),
        (
            FirmwarePolicy.approved_only,
            "UpdateFirmware",
            {"location": f"https://x/{'ab' * 32}"},
            True,
        ),
        (FirmwarePolicy.approved_only, "UpdateFirmware", {"location": "https://x/fw.bin"}, False),
        (FirmwarePolicy.approved_only, "UpdateFirmware", "not an object", False),
    ],
)
def test_firmware_policy(policy: FirmwarePolicy, action: str, payload: object, relay: bool) -> None:
    decision = decide(policy, action, payload, APPROVED)
    assert decision.relay is relay
    assert decision.details["policy"] == policy.value
    assert bool(decision.reason) is not relay


def test_refusals_in_each_protocols_words() -> None:
    assert refusal("2.0.1", "UpdateFirmware") == {"status": "Rejected"}
    assert refusal("1.6", "SignedUpdateFirmware") == {"status": "Rejected"}
    assert refusal("1.6", "UpdateFirmware") is None  # its response has no status: a CALLERROR


async def test_the_queue_is_bounded_for_what_chargeward_answered() -> None:
    q = UpstreamQueue(cap=2)
    frame = Frame.parse('[2,"1","MeterValues",{}]')
    assert frame is not None
    assert q.push(Pending(frame, live=False)) and q.push(Pending(frame, live=False))
    assert q.full and not q.push(Pending(frame, live=False))
    assert q.push(Pending(frame, live=True))  # the station waits for it: never refused here


def test_upstream_url_and_credentials_per_station() -> None:
    cfg = ProxyConfig(
        url_template="wss://csms.example/ocpp/{stationId}",
        station_urls={"CP-2": "wss://other.example/{stationId}"},
        station_policies={"CP-2": FirmwarePolicy.refuse},
        credential_mode=CredentialMode.stored,
        credentials={"CP-1": ("CP-1", "pw")},
    )
    assert cfg.url_for("CP/1") == "wss://csms.example/ocpp/CP%2F1"
    assert cfg.url_for("CP-2") == "wss://other.example/CP-2"
    assert cfg.policy_for("CP-2") is FirmwarePolicy.refuse
    assert cfg.policy_for("CP-1") is FirmwarePolicy.approved_only
    assert cfg.authorization("CP-1", None) == "Basic " + base64.b64encode(b"CP-1:pw").decode()
    assert cfg.authorization("CP-3", None) is None
    through = ProxyConfig(url_template="ws://h/{stationId}")
    assert through.authorization("CP-1", Headers({"Authorization": "Basic eA=="})) == "Basic eA=="
    with pytest.raises(ConfigError):
        ProxyConfig(url_template="http://h/{stationId}")
