"""Tie a JUnit report to the commit and environment of the test run that wrote it.

The test suite's ``tests/conftest.py`` writes :func:`run_properties` into the report as
testsuite ``<property>`` elements (pytest ``--junitxml``); an evidence pack reads them back
with :func:`check_report` and refuses a report that has none, or one produced under a commit
other than the one the pack is about::

    props = run_properties(Path("."))
    props["chargeward.commit"], props["chargeward.dirty"]
    # -> ('97579a8…', 'false')
    run = check_report(parse_junit(xml), expected_commit=head.commit)

Nothing here trusts the report: the properties say what the run claims about itself, and the
pack's signature (:mod:`chargeward.evidence.signing`) says who vouches for the pack.
"""

from __future__ import annotations

import platform
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from chargeward import __version__
from chargeward.errors import ConfigError, TrustError
from chargeward.evidence.matrix import JUnitReport

PREFIX = "chargeward."
COMMIT, DIRTY, VERSION = f"{PREFIX}commit", f"{PREFIX}dirty", f"{PREFIX}version"
PYTHON, PLATFORM, PACKAGE = f"{PREFIX}python", f"{PREFIX}platform", f"{PREFIX}package."
# The packages whose versions decide what the tests exercised.
KEY_PACKAGES = (
    "chargeward",
    "cryptography",
    "tuf",
    "securesystemslib",
    "python-pkcs11",
    "ocpp",
    "websockets",
    "fastapi",
    "sqlalchemy",
    "cyclonedx-python-lib",
    "pytest",
    "pytest-xdist",
)
UNKNOWN = "unknown"
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names
GIT_TIMEOUT = 30.0


class ReportProvenanceRefused(TrustError):
    """The test report does not say which commit produced it, or names another commit."""


@dataclass(frozen=True)
class Checkout:
    commit: str
    dirty: bool


def _git(path: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_checkout(path: Path) -> Checkout | None:
    """The commit checked out at ``path`` and whether the tree differs from it (tracked
    changes or untracked files); None when ``path`` is not in a git work tree."""
    head = _git(path, "rev-parse", "HEAD")
    status = _git(path, "status", "--porcelain")
    if head is None or status is None or not _COMMIT.fullmatch(head.strip()):
        return None
    return Checkout(head.strip(), bool(status.strip()))


def package_checkout() -> Checkout | None:
    """The checkout this Chargeward runs from (an editable install), if it is one: the
    package must be tracked there, so that an installed copy inside some other repository
    (a virtual environment in a project's tree) does not take that project's commit."""
    package = Path(__file__).resolve().parents[1]
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    return git_checkout(package)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_properties(root: Path) -> dict[str, str]:
    """The properties a test run at ``root`` writes into its JUnit report."""
    checkout = git_checkout(root)
    props = {
        COMMIT: checkout.commit if checkout else UNKNOWN,
        DIRTY: (str(checkout.dirty).lower()) if checkout else UNKNOWN,
        VERSION: __version__,
        PYTHON: f"{platform.python_implementation()} {platform.python_version()}",
        PLATFORM: platform.platform(),
    }
    props.update({f"{PACKAGE}{name}": _version(name) for name in KEY_PACKAGES})
    return props


@dataclass(frozen=True)
class RunProvenance:
    """What one suite of a report says about its run."""

    commit: str
    dirty: bool | None  # None: the run could not tell
    version: str
    python: str
    platform: str
    packages: Mapping[str, str]

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> RunProvenance | None:
        commit = props.get(COMMIT)
        if commit is None:
            return None
        dirty = {"true": True, "false": False}.get(props.get(DIRTY, UNKNOWN))
        packages = {k.removeprefix(PACKAGE): v for k, v in props.items() if k.startswith(PACKAGE)}
        return cls(
            commit,
            dirty,
            props.get(VERSION, UNKNOWN),
            props.get(PYTHON, UNKNOWN),
            props.get(PLATFORM, UNKNOWN),
            dict(sorted(packages.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "dirty": self.dirty,
            "chargeward_version": self.version,
            "python": self.python,
            "platform": self.platform,
            "packages": dict(self.packages),
        }


@dataclass(frozen=True)
class ReportRun:
    """The provenance of a whole report (every suite), checked against the expected commit."""

    runs: tuple[RunProvenance, ...]
    expected_commit: str
    same_commit: bool

    @property
    def commit(self) -> str:
        return self.runs[0].commit

    @property
    def dirty(self) -> bool | None:
        """True if any run was on a modified tree; None if a run could not tell."""
        flags = [r.dirty for r in self.runs]
        return True if True in flags else (None if None in flags else False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "dirty": self.dirty,
            "expected_commit": self.expected_commit,
            "same_commit": self.same_commit,
            "runs": [r.to_dict() for r in self.runs],
        }


def normalise_commit(commit: str) -> str:
    """A full commit id, lower case; :class:`ConfigError` for anything else."""
    value = commit.strip().lower()
    if not _COMMIT.fullmatch(value):
        raise ConfigError(f"{commit!r} is not a full git commit id (40 or 64 hex digits)")
    return value


def check_report(
    report: JUnitReport, *, expected_commit: str, allow_other_commit: bool = False
) -> ReportRun:
    """Every suite of ``report`` must name the commit it ran under, the same one for all;
    unless ``allow_other_commit``, that must be ``expected_commit`` (the pack then says so).

    Raises :class:`ReportProvenanceRefused` otherwise.
    """
    expected = normalise_commit(expected_commit)
    runs = []
    for n, props in enumerate(report.properties or ({},), start=1):
        run = RunProvenance.from_properties(props)
        if run is None or run.commit == UNKNOWN:
            raise ReportProvenanceRefused(
                f"test report suite {n} does not name the commit it ran under (no "
                f"{COMMIT} property): run the tests with the repository's tests/conftest.py"
            )
        runs.append(run)
    commits = sorted({r.commit for r in runs})
    if len(commits) > 1:
        raise ReportProvenanceRefused(
            f"the test reports were produced under different commits: {', '.join(commits)}"
        )
    same = commits[0] == expected
    if not same and not allow_other_commit:
        raise ReportProvenanceRefused(
            f"the test report was produced under commit {commits[0]}, not {expected}: run the "
            "tests at that commit (or pass --allow-other-commit to build a pack that says so)"
        )
    return ReportRun(tuple(runs), expected, same)
