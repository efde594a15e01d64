"""Evidence packs without a server: JUnit reports in pytest's form (with the run's
provenance properties) and an :class:`~chargeward.evidence.pack.Api` serving one release.

The API here answers only what :func:`chargeward.evidence.pack.collect` asks of a release
that has no campaigns, approvals or audit entries; the real server's pack is covered by
tests/integration/test_evidence_export.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from chargeward.audit.checkpoint import verifier_key
from chargeward.errors import NotFound
from chargeward.evidence import pack
from chargeward.evidence.bundle import ReleaseFiles, read_bundle

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
BODIES = {
    "passed": "",
    "failed": '<failure message="assert False">assert False</failure>',
    "skipped": '<skipped type="pytest.skip" message="no softhsm">skip</skipped>',
}


def run_properties(commit: str | None, *, dirty: bool = False) -> dict[str, str]:
    if commit is None:
        return {}
    return {  # the names tests/conftest.py writes (chargeward.evidence.testrun)
        "chargeward.commit": commit,
        "chargeward.dirty": str(dirty).lower(),
        "chargeward.version": "0.1.0",
        "chargeward.python": "CPython 3.11.7",
        "chargeward.platform": "Linux-x86_64",
        "chargeward.package.cryptography": "44.0.0",
    }


def junit(outcomes: dict[str, str], *, commit: str | None = COMMIT_A, dirty: bool = False) -> bytes:
    """A pytest JUnit report of ``outcomes`` (node id -> passed | failed | skipped), its
    suite carrying the run's properties (none when ``commit`` is None)."""
    props = "".join(
        f"<property name={quoteattr(k)} value={quoteattr(v)} />"
        for k, v in run_properties(commit, dirty=dirty).items()
    )
    cases = []
    for node, outcome in outcomes.items():
        path, _, name = node.partition("::")
        classname = path.removesuffix(".py").replace("/", ".")
        cases.append(
            f'<testcase classname="{classname}" name="{name}" time="0.1">{BODIES[outcome]}'
            "</testcase>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
        f'failures="0" skipped="0" tests="{len(cases)}" time="1.0" '
        'timestamp="2026-01-05T10:00:00" hostname="ci">'
        + (f"<properties>{props}</properties>" if props else "")
        + "".join(cases)
        + "</testsuite></testsuites>"
    ).encode()


def all_mapped(outcome: str = "passed") -> dict[str, str]:
    """Every test the shipped mapping names, with one outcome."""
    return {t: outcome for r in pack.requirements() for t in r.tests}


class OneReleaseApi:
    """The REST API of a server holding one release (from ``files``) and nothing else."""

    base = "https://csms.example"

    def __init__(self, files: ReleaseFiles) -> None:
        manifest = json.loads(files.manifest)["release"]
        self.release = {
            "id": files.release_id,
            "version": manifest["version"],
            "security_version": manifest["security_version"],
            "release_class": manifest.get("release_class"),
            "hardware_models": manifest["hardware_models"],
            "customer": None,
            "uploaded_at": "2026-01-05T09:00:00+00:00",
            "uploaded_by": "carol",
            "state": "published",
            "targets_version": 2,
            "documents": {},
        }
        self.vkey = verifier_key("csms.example/audit", hashlib.sha256(b"k").digest()).vkey

    def request(self, method: str, path: str, **kw: Any) -> Any:
        rid = self.release["id"]
        answers: dict[str, Any] = {
            "/api/v1/releases": [self.release],
            "/api/v1/campaigns": [],
            f"/api/v1/releases/{rid}/approvals": [],
            "/api/v1/audit": [],
        }
        if method != "GET" or path not in answers:
            raise NotFound(f"{method} {path}")
        return answers[path]

    def text(self, method: str, path: str, **kw: Any) -> str:
        if (method, path) == ("GET", "/api/v1/audit/vkey"):
            return self.vkey
        raise NotFound(f"{method} {path}")


def collect_release(bundle: Path, report: bytes, **inputs: Any) -> pack.Evidence:
    """The evidence of ``bundle``'s release with ``report`` (``inputs``: commit, ...)."""
    files = read_bundle(bundle)
    api = OneReleaseApi(files)
    wanted = pack.Inputs("release", api.release["version"], report, **inputs)
    return pack.collect(api, wanted, files=files)
