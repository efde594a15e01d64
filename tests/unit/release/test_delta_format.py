"""The .cwdl delta format: round trips, and every way a delta can be wrong refused with one
clear line and nothing left behind; the charger's reading of a delta offer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargeward.agent.delta_update import DeltaRefused, delta_offer
from chargeward.crypto.signature import Digest, sha256_file
from chargeward.errors import BundleError
from chargeward.model.targets import DeltaCustom
from chargeward.release.delta import DeltaError, apply_delta, make_delta, read_delta

MAX = 1 << 24


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(7)
    old = bytearray(rng.randbytes(1 << 20))
    new = bytearray(old)
    for at in (1000, 200_000, 700_000):  # a few edits, an insertion, a truncation
        new[at : at + 16] = rng.randbytes(16)
    new[500_000:500_000] = b"inserted " * 100
    del new[-3000:]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    return tmp_path / "old", tmp_path / "new"


def _refused(tmp_path: Path, old: Path, delta: Path, **kw: object) -> str:
    out = tmp_path / "out"
    with pytest.raises(DeltaError) as e:
        apply_delta(old, delta, out, max_size=kw.pop("max_size", MAX), **kw)  # type: ignore[arg-type]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".delta-")]
    return str(e.value)


def test_round_trip_is_small_and_exact(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    old, new = pair
    info = make_delta(old, new, tmp_path / "d.cwdl")
    assert info.source == sha256_file(old) and info.to == sha256_file(new)
    assert info.length < new.stat().st_size * 0.01
    assert read_delta(tmp_path / "d.cwdl") == info
    apply_delta(old, tmp_path / "d.cwdl", tmp_path / "out", expected=info.to, max_size=MAX)
    assert (tmp_path / "out").read_bytes() == new.read_bytes()


def test_corrupt_truncated_and_edited_deltas_are_refused(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    old, new = pair
    info = make_delta(old, new, tmp_path / "d.cwdl")
    good = (tmp_path / "d.cwdl").read_bytes()
    bad = tmp_path / "bad.cwdl"

    def variant(data: bytes) -> str:
        bad.write_bytes(data)
        return _refused(tmp_path, old, bad, expected=info.to)

    flipped = bytearray(good)
    flipped[len(good) - 40] ^= 0x5A
    assert variant(bytes(flipped)).startswith(("the delta is corrupt", "the delta rebuilt"))
    assert variant(good[: len(good) // 2]).startswith(("the delta is corrupt", "the delta rebuilt"))
    assert variant(b"PK\x03\x04 not a delta") == "not a Chargeward delta (no CWDL header)"
    assert variant(good[:9] + good[9:].replace(b'"from"', b'"frum"', 1)) == (
        "delta header must hold exactly algorithm, from and to"
    )
    assert variant(b"CWDL\x01\xff\xff\xff\xff") == "delta header of 4294967295 bytes (at most 4096)"


def test_a_delta_for_another_base_is_refused_before_anything_is_written(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    old, new = pair
    make_delta(old, new, tmp_path / "d.cwdl")
    other = tmp_path / "other"
    base = old.read_bytes()
    other.write_bytes(base[:-1] + bytes([base[-1] ^ 0xFF]))  # last byte changed, always
    why = _refused(tmp_path, other, tmp_path / "d.cwdl")
    assert why.startswith("the delta applies to image ") and ", not to " in why


def test_the_result_must_be_the_expected_image_and_within_the_limit(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    old, new = pair
    info = make_delta(old, new, tmp_path / "d.cwdl")
    elsewhere = Digest("0" * 64, info.to.length)
    assert _refused(tmp_path, old, tmp_path / "d.cwdl", expected=elsewhere).startswith(
        "the delta rebuilds image "
    )
    small = info.to.length - 1
    assert _refused(tmp_path, old, tmp_path / "d.cwdl", max_size=small) == (
        f"the delta rebuilds {info.to.length} bytes; the limit is {small}"
    )


def test_a_header_lying_about_the_result_is_caught_while_writing(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    """A header naming another result than the patch produces (a forged header on a real
    patch): the hash check while writing refuses it."""
    old, new = pair
    info = make_delta(old, new, tmp_path / "d.cwdl")
    data = (tmp_path / "d.cwdl").read_bytes()
    forged = data.replace(info.to.sha256.encode(), b"f" * 64, 1)
    (tmp_path / "f.cwdl").write_bytes(forged)
    why = _refused(tmp_path, old, tmp_path / "f.cwdl")
    assert why.startswith("the delta rebuilt ") and "not image ffffffffffff" in why


def test_the_same_image_needs_no_delta(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    old, _ = pair
    with pytest.raises(DeltaError, match="are the same image"):
        make_delta(old, old, tmp_path / "d.cwdl")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(old=st.binary(min_size=1, max_size=2000), new=st.binary(min_size=0, max_size=2000))
def test_round_trips_on_any_bytes(tmp_path: Path, old: bytes, new: bytes) -> None:
    if old == new:
        return
    (tmp_path / "o").write_bytes(old)
    (tmp_path / "n").write_bytes(new)
    make_delta(tmp_path / "o", tmp_path / "n", tmp_path / "d")
    apply_delta(tmp_path / "o", tmp_path / "d", tmp_path / "r", max_size=MAX)
    assert (tmp_path / "r").read_bytes() == new
    (tmp_path / "r").unlink()


OFFER = {
    "vendor_id": "org.chargeward",
    "delta": {
        "location": "https://csms.example/firmware/sha256/ab?sig=1",
        "sha256": "a" * 64,
        "length": 1000,
        "from_sha256": "b" * 64,
        "target": "firmware/AC22/1.1.0/main.from-1.0.0.cwdl",
    },
}


def test_the_charger_reads_a_delta_offer_and_refuses_malformed_ones() -> None:
    job = delta_offer(OFFER, model="AC22", max_bytes=MAX)
    assert job is not None and job.length == 1000 and job.from_sha256 == "b" * 64
    assert delta_offer(None, model="AC22", max_bytes=MAX) is None
    assert delta_offer({"vendor_id": "com.other", "delta": {}}, model="AC22", max_bytes=MAX) is None
    cases = {
        "location": ("ftp://x/y", "delta location refused"),
        "sha256": ("A" * 64, "delta sha256 must be 64 lowercase hex digits"),
        "length": (MAX + 1, f"delta length must be 1-{MAX} bytes"),
        "target": ("firmware/DC50/1.1.0/main.from-1.0.0.cwdl", "delta target must be a .cwdl"),
    }
    for key, (value, message) in cases.items():
        offer = {**OFFER, "delta": {**OFFER["delta"], key: value}}  # type: ignore[dict-item]
        with pytest.raises(DeltaRefused, match=message):
            delta_offer(offer, model="AC22", max_bytes=MAX)


def test_delta_target_fields_round_trip_and_refuse_nonsense() -> None:
    custom = DeltaCustom("main", "1.1.0", "1.0.0", "a" * 64, 10, "b" * 64, 12)
    assert DeltaCustom.from_dict(custom.to_dict()) == custom
    with pytest.raises(BundleError, match="malformed"):
        DeltaCustom.from_dict({"models": ["AC22"]})  # a firmware target's fields
    with pytest.raises(BundleError, match="must change the image"):
        DeltaCustom("main", "1.1.0", "1.0.0", "a" * 64, 10, "a" * 64, 10)
