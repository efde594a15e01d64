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

SIGKILL loses nothing the kernel holds, so those trials cannot fail on a missing fsync.  The
crash-model tests below (docs/adr/0036) boot every disk state a real power cut may leave
(``tests.support.crashfs``: unsynced data and directory entries lost) at every operation of
two installs and at random points, and check that leaving out any needed sync is caught.
"""

from __future__ import annotations

import ast
import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

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
from chargeward.agent.update import UpdatePipeline
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
from tests.support.crashfs import CrashFS, CrashState, Op, materialise, recording
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

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


# -- The crash model: what a real power cut drops (docs/adr/0036) ---------------------------
#
# SIGKILL loses nothing the kernel already holds, so the trials above pass even without a
# single fsync.  Here the agent's flash writes go through ``tests.support.crashfs.CrashFS``,
# which records every operation and works out the disk states a power cut may leave (unsynced
# file data and unsynced creates, renames and unlinks lost, in any combination).  Each state is
# booted as the charger would boot it: the bootloader step, then the agent's report of the
# install (``UpdatePipeline.commit``), then a second boot.
#
# Two installs are explored: 1.0.0 -> 1.1.0 into the empty slot b, and then 1.1.0 -> 1.2.0
# into slot a, which still holds the factory image (and, with two images, its components).

CRASH_SEED = int(os.environ.get("CHARGEWARD_CRASH_SEED", "20261207"))
RANDOM_POINTS = int(os.environ.get("CHARGEWARD_CRASH_RANDOM_POINTS", "300"))
FACTORY = "1.0.0"


@dataclass
class Recorded:
    """One install, boot and commit, recorded by the crash model."""

    flash: CrashFS
    old: str
    new: str
    request_id: int
    started: int  # from this operation on, the install state "pending" was durable
    switched: int  # from this operation on, write_slot had returned (boot control switched)


class _Reports:
    """The agent as :meth:`UpdatePipeline.commit` sees it: its flash, statuses and events."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.statuses: list[tuple[str, int | None]] = []
        self.events: list[str] = []

    async def _status(self, status: str, request_id: int | None) -> None:
        self.statuses.append((status, request_id))

    async def _security_event(self, type: str, tech_info: str) -> None:
        self.events.append(type)


def _after_sync(ops: list[Op], renamed_to: str) -> int:
    """The operation after the directory sync that follows the first rename to ``renamed_to``
    (a skipped sync counts: the caller went on as if it had synced)."""
    first = next(o.index for o in ops if o.kind == "rename" and o.dst == renamed_to)
    return next(o.index for o in ops[first:] if o.kind == "fsync_dir") + 1


def record(
    fx: Fixture,
    work: Path,
    cycle: int,
    *,
    skip_syncs: frozenset[int] = frozenset(),
    skip_sites: frozenset[str] = frozenset(),
) -> Recorded:
    """Record install ``cycle`` (1: into the empty slot b, 2: back into slot a)."""
    state = fresh(fx, work / "recorded")
    if cycle == 2:
        update_cycle(state, fx.images[UPDATE], 1)
    old, new = (FACTORY, UPDATE) if cycle == 1 else (UPDATE, NEXT)
    flash = CrashFS(state.root, skip_syncs=skip_syncs, skip_sites=skip_sites)
    recording(flash, lambda: update_cycle(state, fx.images[new], cycle))
    started = _after_sync(flash.ops, "install.json")
    switched = _after_sync(flash.ops, "boot.json")
    return Recorded(flash, old, new, cycle, started, switched)


def judge(rec: Recorded, crash: CrashState, where: Path) -> tuple[str, str]:
    """Boot a crash state; returns (outcome, detail): ``new`` or ``old`` (both fine),
    ``bricked``, ``wrong report`` or ``lost install`` (write_slot had returned, yet the old
    version runs)."""
    state = StateDir(materialise(crash, where))
    reports = _Reports(state)
    try:
        booted = bootloader.boot(state)
        asyncio.run(UpdatePipeline(cast("Agent", reports)).commit(booted))
        again = bootloader.boot(state)  # and it keeps booting
    except Exception as e:  # whatever stops the charger from booting
        return "bricked", f"{type(e).__name__}: {e}"
    running = booted.header.version
    if (again.slot, again.trial, again.fell_back) != (booted.slot, False, False):
        return "bricked", f"second boot {again}"
    alarms = [e["type"] for e in state.pending_events()] + reports.events
    told = [s for s, rid in reports.statuses if rid == rec.request_id]
    if alarms:
        return "wrong report", f"false alarm {alarms} (runs {running}, reported {told})"
    if running == rec.new:
        ok = told == ["Installed"]
    elif running == rec.old:
        if crash.point >= rec.switched:
            return "lost install", f"write_slot had returned, yet {running} runs"
        ok = told == ["InstallationFailed"] or (crash.point < rec.started and not told)
    else:
        ok = False
    return ("new" if running == rec.new else "old") if ok else "wrong report", (
        f"runs {running}, reported {told}"
    )


@dataclass
class Tally:
    steps: int = 0
    random_points: int = 0
    states: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def bad(self) -> int:
        return len(self.failures)

    def __str__(self) -> str:
        return (
            f"{self.steps} steps, {self.random_points} random points, {self.states} states: "
            f"new {self.outcomes['new']}, old {self.outcomes['old']}; "
            f"bricked {self.outcomes['bricked']}, wrong reports {self.outcomes['wrong report']}, "
            f"lost installs {self.outcomes['lost install']}"
        )


def explore(
    rec: Recorded, where: Path, *, random_points: int, extra: int = 2, stop_at_first: bool = False
) -> Tally:
    """Crash before every operation of the recorded run (each with its bounded set of disk
    states) and at ``random_points`` random points; boot every state."""
    rng = random.Random(CRASH_SEED)
    tally = Tally(steps=len(rec.flash.ops) + 1, random_points=random_points)

    def crashes() -> Iterator[CrashState]:
        for point in range(len(rec.flash.ops) + 1):
            yield from rec.flash.crash_states(point, rng, extra)
        yield from rec.flash.random_states(rng, random_points)

    for crash in crashes():
        outcome, detail = judge(rec, crash, where)
        tally.states += 1
        tally.outcomes[outcome] += 1
        if outcome not in ("new", "old"):
            op = rec.flash.ops[crash.point] if crash.point < len(rec.flash.ops) else "the end"
            tally.failures.append(f"{outcome} before {op} ({crash.label}): {detail}")
            if stop_at_first:
                break
    return tally


@pytest.mark.parametrize("cycle", [1, 2])
def test_power_cut_at_every_step_under_the_crash_model(fx: Fixture, work: Path, cycle: int) -> None:
    rec = record(fx, work, cycle)
    assert rec.flash.ops and not any(o.skipped for o in rec.flash.ops)
    tally = explore(rec, work / "crash", random_points=RANDOM_POINTS)
    print(f"\ncrash model, install {rec.old} -> {rec.new}: {tally}")
    assert tally.bad == 0, "\n".join(tally.failures[:10])
    assert tally.outcomes["new"] and tally.outcomes["old"]


def sync_sites() -> set[str]:
    """Every storage function that syncs (calls ``fsync_file`` or ``fsync_dir`` of its Flash),
    read from the source of :mod:`chargeward.agent.storage`."""
    tree = ast.parse(Path(storage.__file__).read_text())
    sites = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("_fsync"):
            for call in ast.walk(fn):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr in ("fsync_file", "fsync_dir")
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id == "_flash"
                ):
                    sites.add(fn.name)
    return sites


# Syncs whose removal no explored power cut of the install path turns into a bricked charger
# or a wrong report, and why (the mutation tests check that they stay undetected, so this list
# is kept true).
REDUNDANT_SITES = {
    "fsync_dir": "the public fsync_dir: not used by the install, boot or commit path",
    "remove": (
        "the invalidation of the target slot (slot.json and stale components removed): each "
        "directory is synced again by the next write into it (the new image, the new "
        "slot.json), and boot control points to the slot only after that; the bootloader "
        "checks the image against slot.json in any case"
    ),
}


def test_the_crash_model_detects_every_missing_sync(fx: Fixture, work: Path) -> None:
    """Mutation check: leave out one sync call site of the storage module at a time (in both
    installs); some power cut must then brick the charger, make it report a wrong outcome or
    lose the install."""
    sites = sync_sites()
    assert {"atomic_write", "atomic_copy", "_commit", "remove"} <= sites, sites
    results: dict[str, tuple[int, str | None]] = {}
    for site in sorted(sites):
        skipped, first = 0, None
        for cycle in (1, 2):
            rec = record(fx, work, cycle, skip_sites=frozenset({site}))
            skipped += sum(o.skipped for o in rec.flash.ops)
            tally = explore(rec, work / "crash", random_points=0, stop_at_first=True)
            if tally.failures:
                first = f"install {rec.old} -> {rec.new}: {tally.failures[0]}"
                break
        results[site] = (skipped, first)
    print("\nmutations (one sync call site left out):")
    for site, (skipped, first) in results.items():
        print(f"  {site}: {skipped} syncs left out; {first or 'NOT DETECTED'}")
    detected = {site for site, (_, first) in results.items() if first}
    assert sites - detected == set(REDUNDANT_SITES) & sites, results


def sync_labels(ops: list[Op]) -> dict[int, str]:
    """Each sync of a run by number, named after the write it finishes: ``fsync_file
    install.json (2)`` is the data sync of the second write of install.json in the run."""
    labels, seen = {}, collections.Counter[str]()
    for o in ops:
        if o.sync is None:
            continue
        if o.kind == "fsync_file":
            name = o.path.rpartition("/")[2].removeprefix(".").removesuffix(".tmp")
            target = f"{o.path.rpartition('/')[0]}/{name}".lstrip("/")
        else:
            before = next(p for p in reversed(ops[: o.index]) if p.kind in ("rename", "unlink"))
            target = before.dst or f"{before.path} (unlink)"
        seen[f"{o.kind} {target}"] += 1
        labels[o.sync] = f"{o.kind} {target} ({seen[f'{o.kind} {target}']})"
    return labels


# Single syncs (one call, not a call site; ``<slot>`` is the slot written) whose loss no power
# cut of that install turns into a bricked charger, a wrong report or a lost install, and why.
# Found by the test below; each is a limit of the single-power-cut model or a sync the install
# does not need (docs/adr/0036).
REDUNDANT_SYNCS = {
    "fsync_dir slots/<slot>/slot.json (unlink) (1)": (
        "invalidation of the target slot: the slot directory is synced again by the image and "
        "slot.json writes, before boot control points to the slot"
    ),
    "fsync_dir slots/<slot>/components/modem.cwfw (unlink) (1)": (
        "the old group's component: the new one is renamed into the same directory and synced"
    ),
    "fsync_dir slots/<slot>/image.cwfw (1)": "slot.json is written next in the same directory",
    "fsync_dir install.json (3)": "mark_rebooting: 'written' and 'rebooting' are recovered alike",
    "fsync_dir boot.json (2)": (
        "the trial boot's attempt count: one lost decrement gives one more trial boot, and a "
        "crash loop in the trial slot still ends on the previous slot (one power cut does not "
        "model the loop itself)"
    ),
    "fsync_dir boot.json (3)": (
        "commit's trial -> committed: a lost one is committed again at the next healthy boot"
    ),
    "fsync_dir secure/rollback.json (1)": (
        "the floor keeps its value here (every release has security version 1); a lost raise "
        "is a rollback-protection matter, not a boot or report one"
    ),
    "fsync_dir install.json (4)": (
        "commit's 'ok': bootloader.commit turns a durable 'rebooting' into 'ok' again"
    ),
}


def _generic(label: str, rec: Recorded) -> str:
    target = StateDir(rec.flash.root).boot_control().active  # after the run: the slot written
    return label.replace(f"slots/{target}/", "slots/<slot>/")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("cycle", [1, 2])
def test_every_single_missing_sync_of_an_install(fx: Fixture, work: Path, cycle: int) -> None:
    """Mutation check, finer: leave out one sync *call* of the run at a time."""
    labels = sync_labels(record(fx, work, cycle).flash.ops)
    results: dict[str, str | None] = {}
    for number, label in labels.items():
        rec = record(fx, work, cycle, skip_syncs=frozenset({number}))
        assert sync_labels(rec.flash.ops) == labels
        tally = explore(rec, work / "crash", random_points=50, stop_at_first=True)
        results[label] = tally.failures[0] if tally.failures else None
    print(f"\nmutations, install cycle {cycle} (one sync call left out):")
    for label, first in results.items():
        print(f"  {label}: {first or 'NOT DETECTED'}")
    missed = {_generic(label, rec) for label, first in results.items() if first is None}
    assert missed <= set(REDUNDANT_SYNCS), sorted(missed - set(REDUNDANT_SYNCS))
