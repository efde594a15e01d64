"""The simulated flash: one state directory per station, and power loss at a named write step.

The agent writes its flash through :mod:`chargeward.agent.storage`, whose every step
(``install.json:synced``, ``image.cwfw:copied``, ...) calls one process-wide fault hook.  With
thousands of agents in one process the hook must know whose write it is: each station's agent
runs in its own :mod:`contextvars` context (:func:`run_on`), which asyncio hands on to every task
it creates and ``asyncio.to_thread`` to the installer's worker thread.

A power loss at step *n* (counted from the first write of an install, the rauc-style
``pending`` install state) raises :class:`PowerCut` in the writing thread, so nothing after
that step reaches the flash, and every later write of that station fails too until the
station is powered up again (a new agent on the same directory).

    flash = Flash(Path("/tmp/cp-1"), cut_at_step=5)
    task = run_on(flash, agent.run())
    await flash.cut.wait()
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from chargeward.agent import bootloader, storage
from chargeward.agent.state import StateDir
from chargeward.errors import ChargewardError

INSTALL_START = "install.json:synced"  # the first step of installer.write_slot

_current: contextvars.ContextVar[Flash | None] = contextvars.ContextVar(
    "chargeward_sim_flash", default=None
)
_installed = threading.Lock()


class PowerCut(BaseException):
    """Raised at a flash write step when the simulated power is off (no agent code catches it)."""


class Flash:
    """One station's flash: its state directory and its power-loss plan."""

    def __init__(self, root: Path, cut_at_step: int | None = None) -> None:
        self.root = root
        self.cut_at_step = cut_at_step
        self.steps: list[str] = []  # steps counted since the install started
        self.cuts: list[str] = []  # the step of each power loss
        self.cut = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._armed = False
        self._off = False

    def step(self, name: str) -> None:
        if self._off:
            raise PowerCut(name)
        if self.cut_at_step is None:
            return
        if not self._armed and name != INSTALL_START:
            return
        self._armed = True
        self.steps.append(name)
        if len(self.steps) == self.cut_at_step:
            self.cut_at_step = None  # one power loss per plan
            self._off = True
            self.cuts.append(name)
            self._loop.call_soon_threadsafe(self.cut.set)
            raise PowerCut(name)

    def power_on(self) -> None:
        self._off = False
        self.cut.clear()

    def state(self) -> StateDir:
        return StateDir(self.root)

    def verified_version(self) -> str | None:
        """The version of the active slot if it passes the secure-boot check, else None.

        Reads only: the bootloader's own check of every image of the slot group.
        """
        state = self.state()
        try:
            return bootloader.check_slot(state, state.boot_control().active).version
        except (ChargewardError, OSError):
            return None


def _dispatch(name: str) -> None:
    flash = _current.get()
    if flash is not None:
        flash.step(name)


def install_hook() -> None:
    """Route the storage fault hook to the flash of whichever station is writing."""
    with _installed:
        storage.set_fault_hook(_dispatch)


def remove_hook() -> None:
    with _installed:
        storage.set_fault_hook(None)


def run_on(flash: Flash, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Start ``coro`` (an agent's run) as a task whose flash writes go to ``flash``."""
    ctx = contextvars.copy_context()
    ctx.run(_current.set, flash)
    return asyncio.get_running_loop().create_task(coro, context=ctx)


def flash_root(prefix: str = "chargeward-sim-") -> Path:
    """A fresh directory for the fleet's flash: on tmpfs (``/dev/shm``) when there is one."""
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp below: a private directory
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


def remove_root(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
