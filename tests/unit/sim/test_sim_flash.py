"""The simulated flash: power loss at the n-th write step of an install, counted per station
even with many agents writing at once in one process, and nothing written until power is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from chargeward.agent import storage
from chargeward.sim import flash as flash_mod
from chargeward.sim.flash import INSTALL_START, Flash, PowerCut, run_on


@pytest.fixture
def hook() -> Iterator[None]:
    flash_mod.install_hook()
    yield
    flash_mod.remove_hook()


async def test_steps_before_an_install_do_not_count(tmp_path: Path) -> None:
    flash = Flash(tmp_path, cut_at_step=2)
    for name in ("credentials.json:synced", "boot.json:synced"):
        flash.step(name)  # ordinary writes before the install: never cut
    flash.step(INSTALL_START)
    with pytest.raises(PowerCut):
        flash.step("image.cwfw:copied")
    assert flash.cuts == ["image.cwfw:copied"] and flash.steps == [INSTALL_START, flash.cuts[0]]
    await asyncio.wait_for(flash.cut.wait(), 5)  # the station's task learns of the cut


async def test_after_a_cut_every_write_fails_until_power_returns(tmp_path: Path) -> None:
    flash = Flash(tmp_path, cut_at_step=1)
    with pytest.raises(PowerCut):
        flash.step(INSTALL_START)
    for name in ("boot.json:synced", INSTALL_START):
        with pytest.raises(PowerCut):
            flash.step(name)
    flash.power_on()
    flash.step(INSTALL_START)  # one power loss per plan: the next install goes through
    flash.step("image.cwfw:copied")
    assert flash.cuts == [INSTALL_START] and not flash.cut.is_set()


async def test_the_hook_sends_each_write_to_the_flash_of_the_station_writing(
    tmp_path: Path, hook: None
) -> None:
    a, b = Flash(tmp_path / "a", cut_at_step=2), Flash(tmp_path / "b")

    async def install(also_in_thread: bool) -> None:
        storage.step(INSTALL_START)
        if also_in_thread:  # the installer writes from a worker thread
            await asyncio.to_thread(storage.step, "image.cwfw:copied")
        else:
            storage.step("image.cwfw:copied")

    ta = run_on(a, install(also_in_thread=True))
    tb = run_on(b, install(also_in_thread=False))
    with pytest.raises(PowerCut):
        await ta
    await tb
    assert a.cuts == ["image.cwfw:copied"]
    assert b.cuts == [] and b.steps == []  # b planned no cut: nothing counted, nothing cut
    storage.step(INSTALL_START)  # outside any station: no flash, no effect


async def test_an_empty_or_damaged_flash_has_no_verified_version(tmp_path: Path) -> None:
    assert Flash(tmp_path / "missing").verified_version() is None
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "boot.json").write_text("{not json")
    assert Flash(tmp_path / "junk").verified_version() is None
