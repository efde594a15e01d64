"""Deltas of customer-locked releases live under the customer's tenant prefix (ADR 0026).

The server offers a customer-locked release's delta at its target in the customer's tenant
role (``tenants/<id>/firmware/<model>/...cwdl``,
:func:`chargeward.server.rollout.deltas.offer_for`); the reference agent accepts that target
for its own customer only.
"""

from __future__ import annotations

import hashlib

import pytest
from tuf.api.metadata import TargetFile

from chargeward.agent.delta_update import DeltaRefused, delta_offer
from chargeward.model.targets import delta_target_path, tenant_of_path, tenant_path
from chargeward.publish.targets import DeltaFacts, ImageFacts, release_targets

MAX = 1 << 24


def _offer(target: str) -> dict[str, object]:
    return {
        "vendor_id": "org.chargeward",
        "delta": {
            "location": "https://csms.example/firmware/sha256/ab?sig=1",
            "sha256": "a" * 64,
            "length": 1000,
            "from_sha256": "b" * 64,
            "target": target,
        },
    }


def test_a_customer_locked_release_lists_its_delta_under_the_tenant_prefix() -> None:
    image = b"firmware 1.1.0\n" * 100
    delta = DeltaFacts("main", "1.0.0", "c" * 64, 1400, "d" * 64, 90)
    facts = ImageFacts("main", hashlib.sha256(image).hexdigest(), len(image), "c2ln")
    listed: dict[str, TargetFile] = release_targets(
        version="1.1.0",
        security_version=2,
        models=["AC22"],
        release_class="feature",
        customer="fleet-a",
        images=[facts],
        deltas=[delta],
    )
    want = tenant_path("fleet-a", delta_target_path("AC22", "1.1.0", "main", "1.0.0"))
    assert want in listed and want.startswith("tenants/")
    assert all(tenant_of_path(p) is not None for p in listed)  # nothing public


def test_the_agent_takes_its_customers_delta_and_no_other() -> None:
    plain = delta_target_path("AC22", "1.1.0", "main", "1.0.0")
    mine = tenant_path("fleet-a", plain)
    job = delta_offer(_offer(mine), model="AC22", max_bytes=MAX, customer="fleet-a")
    assert job is not None and job.target == mine
    # a fleet-wide delta is still taken by a customer's charger and by one with no customer
    assert delta_offer(_offer(plain), model="AC22", max_bytes=MAX, customer="fleet-a")
    assert delta_offer(_offer(plain), model="AC22", max_bytes=MAX)
    others = tenant_path("fleet-b", plain)
    for target, customer in (
        (others, "fleet-a"),
        (mine, None),
        (mine.replace("AC22", "DC50"), "fleet-a"),
    ):
        with pytest.raises(DeltaRefused, match="delta target must be"):
            delta_offer(_offer(target), model="AC22", max_bytes=MAX, customer=customer)
