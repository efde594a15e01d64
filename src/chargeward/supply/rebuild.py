"""The reproducible-build check: build the same source twice, compare the declared outputs.

The source directory is copied into two fresh temporary directories and the build command runs
in each with the same ``SOURCE_DATE_EPOCH`` and a small, clean environment (``PATH``; ``HOME``
and ``TMPDIR`` inside the build's own temporary directory; ``LC_ALL=C``; ``TZ=UTC``).  The two
builds differ in their directory and in the time they run, so an output that embeds the clock,
randomness or its build path shows up as differing.  Each declared output's SHA-256 is compared.

    result = rebuild_check(
        "make firmware", Path("."), ["build/firmware.bin"],
        source_date_epoch=1700000000, timeout=600,
    )
    result.status
    # -> <RebuildStatus.REPRODUCIBLE: 'reproducible'>
    result.to_json()  # the record that goes into the provenance's byproducts

A string command runs through ``/bin/sh -c``; a list runs as it is, without a shell.  Builds
run one after the other, each in its own process group, which is killed on timeout.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from chargeward.crypto import sha256_file
from chargeward.crypto.dsse import load_strict_json
from chargeward.errors import ConfigError
from chargeward.limits import DEFAULT_FORMAT_LIMITS

BuildCommand = str | tuple[str, ...]

STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 4096


class RebuildStatus(enum.StrEnum):
    REPRODUCIBLE = "reproducible"
    DIFFERS = "differs"
    FAILED = "failed"


@dataclass(frozen=True)
class OutputDigests:
    """One declared output's SHA-256 in the first and the second build."""

    path: str
    first: str
    second: str

    @property
    def same(self) -> bool:
        return self.first == self.second


@dataclass(frozen=True)
class BuildFailure:
    """Why a build did not produce its outputs."""

    build: int  # 1 or 2
    reason: str  # e.g. "exit status 2", "timed out after 30 s", "output a.bin was not produced"
    exit_code: int | None  # None when the command did not finish or could not start
    stderr_tail: str


@dataclass(frozen=True)
class RebuildResult:
    """The outcome of :func:`rebuild_check`; ``outputs`` is empty when a build failed."""

    status: RebuildStatus
    command: BuildCommand
    source_date_epoch: int
    outputs: tuple[OutputDigests, ...]
    failure: BuildFailure | None = None

    @property
    def reproducible(self) -> bool:
        return self.status is RebuildStatus.REPRODUCIBLE

    @property
    def differing(self) -> tuple[OutputDigests, ...]:
        return tuple(o for o in self.outputs if not o.same)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "status": self.status.value,
            "command": self.command if isinstance(self.command, str) else list(self.command),
            "sourceDateEpoch": self.source_date_epoch,
            "outputs": [
                {"path": o.path, "first": o.first, "second": o.second} for o in self.outputs
            ],
        }
        if self.failure is not None:
            f = self.failure
            doc["failure"] = {
                "build": f.build,
                "reason": f.reason,
                "exitCode": f.exit_code,
                "stderrTail": f.stderr_tail,
            }
        return doc

    def to_json(self) -> bytes:
        text = json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str = "rebuild result") -> RebuildResult:
        """Read a result written by :meth:`to_json`; :class:`ConfigError` names the field."""
        if len(data) > DEFAULT_FORMAT_LIMITS.rebuild_result_bytes:
            raise ConfigError(
                f"{source} is larger than {DEFAULT_FORMAT_LIMITS.rebuild_result_bytes} bytes"
            )
        try:
            return _result_from_dict(load_strict_json(data))
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from e
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{source}: missing or mistyped field {e}") from e


def _typed(value: Any, kind: type | tuple[type, ...], field: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(field)
    return value


def _result_from_dict(doc: Any) -> RebuildResult:
    doc = _typed(doc, dict, "(top level)")
    command = doc["command"]
    if isinstance(command, list):
        command = tuple(_typed(a, str, "command") for a in command)
    failure = None
    if doc.get("failure") is not None:
        f = _typed(doc["failure"], dict, "failure")
        code = f["exitCode"]
        failure = BuildFailure(
            build=_typed(f["build"], int, "failure.build"),
            reason=_typed(f["reason"], str, "failure.reason"),
            exit_code=None if code is None else _typed(code, int, "failure.exitCode"),
            stderr_tail=_typed(f["stderrTail"], str, "failure.stderrTail"),
        )
    outputs = tuple(
        OutputDigests(
            _typed(o["path"], str, "outputs.path"),
            _typed(o["first"], str, "outputs.first"),
            _typed(o["second"], str, "outputs.second"),
        )
        for o in _typed(doc["outputs"], list, "outputs")
    )
    return RebuildResult(
        status=RebuildStatus(doc["status"]),
        command=_typed(command, (str, tuple), "command"),
        source_date_epoch=_typed(doc["sourceDateEpoch"], int, "sourceDateEpoch"),
        outputs=outputs,
        failure=failure,
    )


def check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    """Declared outputs: relative POSIX paths inside the source tree, no ``..``, no repeats."""
    if not outputs:
        raise ConfigError("declare at least one build output")
    if len(outputs) > DEFAULT_FORMAT_LIMITS.rebuild_outputs:
        raise ConfigError(
            f"at most {DEFAULT_FORMAT_LIMITS.rebuild_outputs} build outputs can be compared"
        )
    checked: list[str] = []
    for raw in outputs:
        path = PurePosixPath(raw)
        if not raw or path.is_absolute() or ".." in path.parts or str(path) == ".":
            raise ConfigError(f"build output {raw!r} must be a relative path inside the source")
        if str(path) in checked:
            raise ConfigError(f"build output {raw!r} is declared twice")
        checked.append(str(path))
    return tuple(checked)


def _command(command: str | Sequence[str]) -> BuildCommand:
    if isinstance(command, str):
        if not command.strip():
            raise ConfigError("the build command is empty")
        return command
    if not command or not all(isinstance(a, str) for a in command) or not command[0]:
        raise ConfigError("the build command must be a non-empty list of strings")
    return tuple(command)


def _tail(path: Path) -> str:
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - STDERR_TAIL_BYTES))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])


def _environment(home: Path, source_date_epoch: int, path_env: str) -> dict[str, str]:
    (home / "tmp").mkdir(parents=True)
    return {
        "PATH": path_env,
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "LC_ALL": "C",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
    }


def _run(
    argv: list[str], cwd: Path, env: dict[str, str], stderr: Path, timeout: float
) -> tuple[str, int | None]:
    """Run one build; returns ("", 0) on success, else the reason it failed and its status."""
    with (stderr.parent / "stdout").open("wb") as out, stderr.open("wb") as err:
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as e:
            return f"cannot run {argv[0]}: {e.strerror}", None
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"timed out after {timeout:g} s", None
    return ("" if code == 0 else f"exit status {code}"), code


def _digests(tree: Path, outputs: tuple[str, ...]) -> dict[str, str] | str:
    """SHA-256 of each output inside ``tree``, or the reason one cannot be read."""
    root = tree.resolve()
    found: dict[str, str] = {}
    for name in outputs:
        path = (tree / name).resolve()
        if not path.is_relative_to(root):
            return f"output {name} points outside the build directory"
        if not path.is_file():
            return f"output {name} was not produced"
        found[name] = sha256_file(path).sha256
    return found


def rebuild_check(
    command: str | Sequence[str],
    source_dir: Path,
    outputs: Sequence[str],
    source_date_epoch: int,
    timeout: float = 1800,
    *,
    progress: Callable[[str], None] = lambda _message: None,
    path_env: str | None = None,
) -> RebuildResult:
    """Build ``source_dir`` twice in clean copies and compare the SHA-256 of ``outputs``.

    ``timeout`` is per build, in seconds.  ``path_env`` is the builds' ``PATH`` (default:
    this process's).  Bad arguments raise :class:`ConfigError`; a build that fails, times out
    or lacks an output gives a ``FAILED`` result, not an exception.
    """
    argv = _command(command)
    declared = check_outputs(outputs)
    if source_date_epoch < 0:
        raise ConfigError("SOURCE_DATE_EPOCH must not be negative")
    if not source_dir.is_dir():
        raise ConfigError(f"source directory {source_dir} does not exist")
    run_argv = ["/bin/sh", "-c", argv] if isinstance(argv, str) else list(argv)
    path = path_env if path_env is not None else os.environ.get("PATH", os.defpath)
    digests: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="chargeward-rebuild-") as base:
        for build in (1, 2):
            work = Path(base) / f"build-{build}"
            progress(f"Copying the source for build {build} of 2")
            try:
                shutil.copytree(source_dir, work / "source", symlinks=True)
            except (OSError, shutil.Error) as e:
                raise ConfigError(f"cannot copy source directory {source_dir}: {e}") from e
            progress(f"Running build {build} of 2")
            env = _environment(work / "home", source_date_epoch, path)
            stderr = work / "stderr"
            reason, code = _run(run_argv, work / "source", env, stderr, timeout)
            found = reason or _digests(work / "source", declared)
            if isinstance(found, str):
                failure = BuildFailure(build, found, code, _tail(stderr))
                return RebuildResult(RebuildStatus.FAILED, argv, source_date_epoch, (), failure)
            digests.append(found)
    first, second = digests
    compared = tuple(OutputDigests(name, first[name], second[name]) for name in declared)
    same = all(o.same for o in compared)
    status = RebuildStatus.REPRODUCIBLE if same else RebuildStatus.DIFFERS
    return RebuildResult(status, argv, source_date_epoch, compared)
