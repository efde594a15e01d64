"""Signed custom fields of firmware targets: the OCPP signature and the release's components."""

from __future__ import annotations

import base64

import pytest

from chargeward.errors import BundleError
from chargeward.model.firmware import primary_component
from chargeward.model.targets import TargetCustom

SIG = base64.b64encode(b"an OCPP firmware signature").decode()


def test_custom_with_signature_and_components_round_trips() -> None:
    custom = TargetCustom(
        ("AC22",), "1.1.0", 2, "modem", signature=SIG, components=("modem", "main")
    )
    data = custom.to_dict()
    assert data["signature"] == SIG and data["components"] == ["main", "modem"]
    assert TargetCustom.from_dict(data) == custom


def test_custom_of_an_older_target_round_trips_without_the_new_fields() -> None:
    older = {
        "models": ["AC22"],
        "version": "1.0.0",
        "security_version": 1,
        "component": "main",
        "release_class": "feature",
        "customer": None,
        "sbom_sha256": None,
    }
    custom = TargetCustom.from_dict(older)
    assert custom.signature is None and custom.components is None
    assert custom.to_dict() == older  # the encoding older targets were signed with


@pytest.mark.parametrize(
    "fields",
    [
        {"signature": "not base64!"},
        {"signature": "A" * 804},
        {"components": ["main"]},  # must hold its own component
        {"components": ["modem", "modem"]},
        {"components": []},
        {"components": ["Bad Name", "modem"]},
    ],
)
def test_malformed_new_fields_are_refused(fields: dict[str, object]) -> None:
    data = {**TargetCustom(("AC22",), "1.1.0", 2, "modem").to_dict(), **fields}
    with pytest.raises(BundleError):
        TargetCustom.from_dict(data)


def test_the_primary_component_is_main_else_the_first_in_sorted_order() -> None:
    assert primary_component(["modem", "main", "ui"]) == "main"
    assert primary_component(["ui", "metering", "app"]) == "app"
    assert primary_component(["modem"]) == "modem"
    with pytest.raises(BundleError):
        primary_component([])
