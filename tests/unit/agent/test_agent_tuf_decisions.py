"""The charger's repository decisions as pure functions: target checks, both-layer gate,
security-release finding and the time floor.  No network, no disk (but for a signed image).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import TargetFile

from chargeward.agent.freshness import check_clock, next_time_floor
from chargeward.agent.verify import (
    SignedImage,
    VerifiedImage,
    accept_image,
    check_target,
    find_security_updates,
    verify_image,
)
from chargeward.errors import RepositoryRefused, RollbackRefused
from chargeward.model.firmware import ImageHeader
from chargeward.model.targets import TargetCustom
from chargeward.release.bundle import verify_bundle
from tests.support.fleet import MODEL, Pki

DATA = b"firmware image bytes"
HEADER = ImageHeader("main", "1.1.0", 2, (MODEL,), "0" * 64, 10)
PATH = f"firmware/{MODEL}/1.1.0/main.cwfw"
T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
TOLERANCE = dt.timedelta(minutes=5)


def target(
    fields: dict[str, Any] | None = None, path: str = PATH, data: bytes = DATA
) -> TargetFile:
    """A TargetFile as the repository lists it, with ``fields`` as its signed custom object."""
    tf = TargetFile.from_data(path, data, ["sha256"])
    tf.unrecognized_fields["custom"] = custom() if fields is None else fields
    return tf


def check(info: TargetFile | None, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "sha256": target().hashes["sha256"],
        "length": len(DATA),
        "header": HEADER,
        "model": MODEL,
        "customer": None,
        "rollback_floor": 1,
        **kw,
    }
    return check_target(info, **args)


def custom(**changes: Any) -> dict[str, Any]:
    return {**TargetCustom((MODEL,), "1.1.0", 2, "main").to_dict(), **changes}


def test_listed_target_is_approved() -> None:
    approval = check(target())
    assert approval.target_path == PATH and approval.length == len(DATA)
    assert check(target(custom(customer="fleet-a")), customer="fleet-a").custom.customer == (
        "fleet-a"
    )


@pytest.mark.parametrize(
    ("info", "kw", "reason"),
    [
        (None, {}, "not-listed"),
        (target(path=f"firmware/{MODEL}/1.1.1/main.cwfw"), {}, "not-listed"),
        (target(), {"length": len(DATA) + 1}, "length"),
        (target(), {"sha256": "f" * 64}, "hash"),
        (target({"models": "nope"}), {}, "repository"),
        (target({"version": "1.1.0"}), {}, "repository"),
        (target(custom(models=["DC50"])), {}, "wrong-model"),
        (target(custom(customer="fleet-a")), {}, "wrong-customer"),
        (target(custom(customer="fleet-a")), {"customer": "fleet-b"}, "wrong-customer"),
        (target(custom(version="1.1.1")), {}, "repository"),
        (target(custom(security_version=3)), {}, "repository"),
        (target(custom(component="boot")), {}, "repository"),
    ],
)
def test_target_refusals(info: TargetFile | None, kw: dict[str, Any], reason: str) -> None:
    with pytest.raises(RepositoryRefused) as err:
        check(info, **kw)
    assert err.value.reason == reason
    assert str(err.value).startswith(f"{reason}: ")


def test_target_below_the_rollback_floor_refused() -> None:
    with pytest.raises(RollbackRefused):
        check(target(), rollback_floor=3)


def test_target_without_sha256_refused() -> None:
    tf = target()
    tf.hashes = {"sha512": "0" * 128}
    with pytest.raises(RepositoryRefused) as err:
        check(tf)
    assert err.value.reason == "repository"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> SignedImage:
    d = tmp_path_factory.mktemp("signed")
    pki = Pki.create(d / "pki")
    image = verify_bundle(pki.bundle(d / "u.cwb", "1.1.0", 2), [pki.root_cert], workdir=d / "x")
    return verify_image(
        image.images[0].file,
        pki.signing_cert,
        image.images[0].signature,
        model=MODEL,
        rollback_floor=1,
    )


def test_only_both_layers_make_a_verified_image(signed: SignedImage) -> None:
    data = Path(signed.path).read_bytes()
    approval = check(target(custom(), data=data), sha256=signed.sha256, length=signed.length)
    image = accept_image(signed, approval)
    assert isinstance(image, VerifiedImage) and image.repository is approval
    other = check(target())
    with pytest.raises(RepositoryRefused, match="another file"):
        accept_image(signed, other)
    fields = [getattr(image, f.name) for f in dataclasses.fields(image)][:-1]
    with pytest.raises(TypeError):
        VerifiedImage(*fields, object())  # only accept_image() makes one


def _listed(*customs: TargetCustom) -> dict[str, TargetFile]:
    out = {}
    for i, c in enumerate(customs):
        path = f"firmware/{MODEL}/{c.version}/{c.component}.cwfw"
        out[path] = target(c.to_dict(), path=path, data=bytes([i]))
    return out


def test_find_security_updates_picks_newer_security_releases_for_this_charger() -> None:
    listed = _listed(
        TargetCustom((MODEL,), "1.0.1", 1, "main", "security"),  # not newer
        TargetCustom((MODEL,), "1.2.0", 3, "main", "feature"),  # not a security release
        TargetCustom((MODEL,), "1.3.0", 5, "main", "security", customer="fleet-b"),
        TargetCustom((MODEL,), "1.4.0", 6, "main", "security", customer="fleet-a"),
        TargetCustom((MODEL,), "1.2.1", 4, "main", "security", components=("main", "modem")),
        TargetCustom((MODEL,), "1.2.1", 4, "modem", "security", components=("main", "modem")),
    )
    listed["firmware/AC22/9.9.9/main.cwfw"] = target({"models": 1}, "firmware/AC22/9.9.9/main.cwfw")
    found = find_security_updates(
        listed, model=MODEL, customer="fleet-a", running_security_version=2
    )
    # One report per release: 1.2.1's modem image comes with its primary.
    assert [(u.version, u.security_version) for u in found] == [("1.2.1", 4), ("1.4.0", 6)]
    assert found[0].report() == {
        "target": f"firmware/{MODEL}/1.2.1/main.cwfw",
        "version": "1.2.1",
        "security_version": 4,
    }
    none = find_security_updates(listed, model=MODEL, customer=None, running_security_version=6)
    assert none == []


def test_clock_floor_with_tolerance() -> None:
    check_clock(T0, None, TOLERANCE)
    check_clock(T0 - dt.timedelta(minutes=4), T0, TOLERANCE)
    with pytest.raises(RepositoryRefused) as err:
        check_clock(T0 - dt.timedelta(minutes=6), T0, TOLERANCE)
    assert err.value.reason == "clock-behind"


def test_next_time_floor_never_goes_down() -> None:
    assert next_time_floor(None, T0, T0, TOLERANCE) == T0
    assert next_time_floor(T0, T0 - dt.timedelta(days=1), T0, TOLERANCE) == T0
    later = T0 + dt.timedelta(minutes=2)
    assert next_time_floor(T0, later, T0, TOLERANCE) == later  # server clock slightly ahead
    with pytest.raises(RepositoryRefused) as err:
        next_time_floor(T0, T0 + dt.timedelta(hours=1), T0, TOLERANCE)
    assert err.value.reason == "clock-behind"
