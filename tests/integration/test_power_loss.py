"""Power loss at any instant: the charger process is killed (SIGKILL) while it installs, boots
and commits an update, then restarted.

Each trial forks a process that runs the agent's flash work for one update (install into the
inactive slot, reboot into the trial slot, mark it good) on a copy of a provisioned charger,
and kills it:

- at every named step of that work (each temp-file write, fsync and rename, see
  ``chargeward.agent.storage.step``), one trial per step;
- at a random instant, over many trials (``CHARGEWARD_POWER_LOSS_TRIALS``, default 1,000;
  seed ``CHARGEWARD_POWER_LOSS_SEED``).

Both with a one-image release and with a two-image one (``main`` + ``modem``, a slot group):
every image of the running slot must still verify after the kill.

After each kill the real agent starts on the same flash against an OCPP CSMS on 127.0.0.1 and
must boot a verified image, report the truth (``Installed`` when the new version runs,
``InstallationFailed`` when an install had started and the old version runs, nothing when it
had not started), and then take the next update.  A trial that cannot boot is a bricked device.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chargeward.agent import bootloader, installer, storage
from chargeward.agent.certificates import boot_revocations
from chargeward.agent.components import (
    VerifiedRelease,
    accept_release,
    check_listing,
    verify_component,
)
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.agent.verify import (
    VerifiedImage,
    accept_image,
    check_target,
    secure_boot_check,
    verify_image,
)
from chargeward.model.targets import firmware_target_path
from chargeward.publish.targets import bundle_targets
from chargeward.release.bundle import verify_bundle
from tests.support.agent_harness import PASSWORD, running_agent, running_csms, statuses
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock

TRIALS = int(os.environ.get("CHARGEWARD_POWER_LOSS_TRIALS", "1000"))
SEED = int(os.environ.get("CHARGEWARD_POWER_LOSS_SEED", "20261121"))
UPDATE, NEXT = "1.1.0", "1.2.0"


@dataclass
class Fixture:
    template: Path  # a provisioned charger running 1.0.0, never modified
    images: dict[str, VerifiedImage | VerifiedRelease]
    components: int  # images per slot besides the primary


def two_images(pki: Pki, bundle: Path, work: Path) -> VerifiedRelease:
    """A ``main`` + ``modem`` release verified as the agent verifies it: both layers for the
    primary, then the other component against the TUF targets the server would publish."""
    verified = verify_bundle(bundle, [pki.root_cert], workdir=work)
    m = verified.manifest
    listed = bundle_targets(verified)
    main, modem = verified.primary, next(i for i in verified.images if i.component == "modem")
    signed = verify_image(
        main.file, pki.signing_cert, main.signature, model=MODEL, rollback_floor=1
    )
    info = listed[firmware_target_path(MODEL, m.version, "main")]
    approval = check_target(
        info,
        sha256=signed.sha256,
        length=signed.length,
        header=signed.header,
        model=MODEL,
        customer=None,
        rollback_floor=1,
    )
    primary = accept_image(signed, approval)
    listing = check_listing(
        listed[firmware_target_path(MODEL, m.version, "modem")],
        component="modem",
        primary=primary,
        model=MODEL,
        customer=None,
        rollback_floor=1,
    )
    component = verify_component(modem.file, listing, primary, model=MODEL, rollback_floor=1)
    return accept_release(primary, [component])


@pytest.fixture(scope="module", params=["one image", "two images"])
def fx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    d = tmp_path_factory.mktemp("power-loss")
    pki = Pki.create(d / "pki")
    payload = os.urandom(48 * 1024)
    grouped = request.param == "two images"

    def bundle(version: str) -> Path:
        data = payload + version.encode()
        components = {"main": data, "modem": os.urandom(24 * 1024)} if grouped else None
        return pki.bundle(d / f"{version}.cwb", version, 1, payload=data, components=components)

    provision(
        d / "template",
        identity=Identity("CP-PL", MODEL, "T", "CP-PL"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=bundle("1.0.0"),
    )
    images: dict[str, VerifiedImage | VerifiedRelease] = {}
    for version in (UPDATE, NEXT):
        if grouped:
            images[version] = two_images(pki, bundle(version), d / version)
            continue
        img = verify_bundle(bundle(version), [pki.root_cert], workdir=d / version).images[0]
        signed = verify_image(
            img.file, pki.signing_cert, img.signature, model=MODEL, rollback_floor=1
        )
        images[version] = accept_image(signed, None)
    return Fixture(d / "template", images, 1 if grouped else 0)


def update_cycle(state: StateDir, image: VerifiedImage | VerifiedRelease, request_id: int) -> None:
    """The flash work of one update, in the agent's order (the network parts left out)."""
    installer.write_slot(state, image, request_id, attempts=3)
    installer.mark_rebooting(state)
    booted = bootloader.boot(state)  # the reboot into the trial slot
    bootloader.commit(state, booted)  # healthy: mark good


def recorded_steps(fx: Fixture, tmp: Path) -> list[str]:
    state = fresh(fx, tmp / "dry-run")
    steps: list[str] = []
    old = storage.set_fault_hook(steps.append)
    try:
        update_cycle(state, fx.images[UPDATE], 1)
    finally:
        storage.set_fault_hook(old)
    return steps


def fresh(fx: Fixture, where: Path) -> StateDir:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(fx.template, where)
    return StateDir(where)


def killed_update(
    state: StateDir,
    image: VerifiedImage | VerifiedRelease,
    *,
    at_step: int | None = None,
    after: float = 0.0,
) -> bool:
    """Run :func:`update_cycle` in a child process and SIGKILL it at step ``at_step`` (1-based)
    or ``after`` seconds; True when the kill landed before the cycle finished."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the charger process
        code = 1
        try:
            os.close(ready_r)
            if at_step is not None:
                count = iter(range(1, 1 << 30))

                def power_cut(_: str) -> None:
                    if next(count) == at_step:
                        os.kill(os.getpid(), signal.SIGKILL)

                storage.set_fault_hook(power_cut)
            os.write(ready_w, b"1")
            update_cycle(state, image, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    if at_step is None:
        time.sleep(after)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, "the update cycle failed without a power cut"
        return False
    assert os.WTERMSIG(status) == signal.SIGKILL
    return True


async def restart_and_report(state: StateDir) -> tuple[str, list[str]]:
    """Start the real agent on the flash; returns (version it runs, statuses for request 1)."""
    started = state.install_state() is not None
    async with running_csms() as csms, running_agent(state, csms, Clock(), None) as agent:
        await csms.wait(lambda: csms.of("StatusNotification"), "connector status")
        running = csms.of("BootNotification")[0]["charging_station"]["firmware_version"]
        if running == UPDATE or started:
            await csms.wait(lambda: statuses(csms, 1), "the outcome of request 1")
        else:
            await asyncio.sleep(0.05)
        assert agent.quarantine is None
        return running, statuses(csms, 1)


def check_recovery(fx: Fixture, state: StateDir) -> str:
    """Restart after the kill; assert a verified boot, a true report and a working update."""
    started = state.install_state() is not None
    running, reported = asyncio.run(restart_and_report(state))
    # The running image verifies against the trust anchors, on flash, independently.
    active = state.boot_control().active
    info = state.slot_info(active)
    assert info is not None and info.version == running
    anchors = state.trust_anchors()
    header = secure_boot_check(
        state.slot_image(active),
        info.signature,
        info.signing_certificate,
        anchors,
        revoked_serials=boot_revocations(state, anchors),
    )
    assert header.version == running
    # Every image of the running slot's group too (the bootloader's own check).
    assert bootloader.check_slot(state, active).version == running
    assert len(info.components) == fx.components
    # The truth, told to the CSMS.
    if running == UPDATE:
        assert reported == ["Installed"]
        outcome = "new version"
    elif started:
        assert (running, reported) == ("1.0.0", ["InstallationFailed"])
        outcome = "old version, install reported failed"
    else:
        assert (running, reported) == ("1.0.0", [])
        outcome = "old version, install not started"
    assert state.boot_control().trial is False
    # And the next update still installs.
    update_cycle(state, fx.images[NEXT], 2)
    assert bootloader.boot(state).header.version == NEXT
    return outcome


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """Where the trials' flash lives: tmpfs when there is one (a killed process loses no
    written data either way; fsync there is cheap, so a thousand trials take minutes less)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="chargeward-power-loss-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sigkill_at_every_step_of_install_boot_and_commit(fx: Fixture, work: Path) -> None:
    steps = recorded_steps(fx, work)
    assert len(steps) >= 20, steps  # every write of the cycle is a step
    outcomes: collections.Counter[str] = collections.Counter()
    for n, name in enumerate(steps, start=1):
        state = fresh(fx, work / "charger")
        assert killed_update(state, fx.images[UPDATE], at_step=n), f"step {n} {name} not reached"
        try:
            outcomes[check_recovery(fx, state)] += 1
        except AssertionError as e:
            raise AssertionError(f"after a kill at step {n} ({name}): {e}") from e
    print(f"\nSIGKILL at each of {len(steps)} steps: {dict(outcomes)}; bricked: 0")
    assert outcomes["new version"] and outcomes["old version, install reported failed"]


@pytest.mark.slow
@pytest.mark.timeout(300)  # 1,000 SIGKILLed agent processes: 85 s alone, 2-3x that beside others
def test_sigkill_at_random_instants(fx: Fixture, work: Path) -> None:
    rng = random.Random(SEED)
    # How long one cycle takes here, so the kills spread over all of it.
    durations = []
    for _ in range(5):
        state = fresh(fx, work / "charger")
        t0 = time.perf_counter()
        update_cycle(state, fx.images[UPDATE], 1)
        durations.append(time.perf_counter() - t0)
    span = sorted(durations)[2] * 1.3
    outcomes: collections.Counter[str] = collections.Counter()
    killed = 0
    for trial in range(TRIALS):
        state = fresh(fx, work / "charger")
        after = rng.uniform(0, span)
        killed += killed_update(state, fx.images[UPDATE], after=after)
        try:
            outcomes[check_recovery(fx, state)] += 1
        except AssertionError as e:
            raise AssertionError(f"trial {trial} (kill after {after * 1e3:.2f} ms): {e}") from e
    print(
        f"\n{TRIALS} trials (seed {SEED}), kill within {span * 1e3:.1f} ms of the start: "
        f"{killed} killed mid-update, {TRIALS - killed} finished first; "
        f"outcomes {dict(outcomes)}; bricked: 0"
    )
    assert sum(outcomes.values()) == TRIALS
    assert killed >= TRIALS // 2
    assert len(outcomes) == 3  # kills landed before, during and after the install
