"""``chargeward evidence export`` against the real server process: a release approved 2 of 3
and published through the TUF repository, a two-station campaign approved by a second
person and run on real agents; then the pack, read by an auditor's token, and checked the
way its VERIFY.md tells a regulator to: SHA256SUMS, and the audit inclusion proofs offline
against the included checkpoint and key (a changed proof is caught)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from chargeward.audit.checkpoint import parse_vkey
from chargeward.audit.proofs import parse_proofs, verify_proofs
from chargeward.audit.verify import LogVerificationError
from chargeward.cli.main import app, exit_code_for
from chargeward.crypto.keys import generate_key, public_key_pem
from chargeward.errors import BundleError, NotFound
from chargeward.evidence.pack import requirements
from chargeward.evidence.testrun import ReportProvenanceRefused
from chargeward.release.bundle import read_manifest
from tests.support.campaigns import ALL_DAY, agents, api, campaign_doc, status_is, until
from tests.support.evidence import run_properties
from tests.support.fleet import (
    TEST_PASSPHRASE,
    Pki,
    Server,
    assert_no_crash,
    cli,
    running_server,
)
from tests.support.trust import TufKeys

STATIONS = ["CP-A", "CP-B"]
PASSING = "UK-SCP Sch.1 para 3(3)(a)"  # the reference agent alone: satisfiable
FAILING = "UK-SCP Sch.1 para 2"
COMMIT = "c0ffee" * 6 + "c0ff"  # the commit the test run names, and the pack is about


def junit_report(path: Path) -> Path:
    """A report in pytest's form, run at COMMIT: every test of PASSING passed, one of FAILING
    failed (a parametrised case), the rest of FAILING's tests passed; every other test absent."""
    mapping = {r.id: r for r in requirements()}
    cases = []
    for node in mapping[PASSING].tests + mapping[FAILING].tests:
        path_part, _, name = node.partition("::")
        classname = path_part.removesuffix(".py").replace("/", ".")
        failed = node == mapping[FAILING].tests[0]
        body = '<failure message="assert False">assert False</failure>' if failed else ""
        cases.append(f'<testcase classname="{classname}" name="{name}[sqlite]" time="0.1">')
        cases.append(f"{body}</testcase>")
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        'errors="0" failures="1" skipped="0" tests="9" time="1.0" '
        'timestamp="2026-01-05T10:00:00.000000" hostname="ci">'
        + "<properties>"
        + "".join(f'<property name="{k}" value="{v}" />' for k, v in run_properties(COMMIT).items())
        + "</properties>"
        + "".join(cases)
        + "</testsuite></testsuites>"
    )
    return path


def as_user(srv: Server, token: str, method: str, path: str, **kw: Any) -> Any:
    with httpx.Client(base_url=srv.api_url, timeout=30) as c:
        r = c.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
    assert r.status_code < 400, r.text
    return r.json()


async def chargeward(*args: str, token: str | None = None) -> Result:
    """The CLI in-process (a new interpreter per command would cost seconds each)."""
    env = {"CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE}
    if token is not None:
        env["CHARGEWARD_API_TOKEN"] = token
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def ok(*args: str, token: str | None = None) -> str:
    result = await chargeward(*args, token=token)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def check_sums(pack: Path) -> list[str]:
    listed = {}
    for line in (pack / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = sorted(p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file())
    assert sorted([*listed, "SHA256SUMS", "evidence.dsse.json"]) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((pack / name).read_bytes()).hexdigest() == digest, name
    return on_disk


@pytest.mark.slow  # 46 s beside the suite's other tests on 2 cores
async def test_campaign_pack_verifies_offline_and_a_changed_proof_is_caught(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    data = tmp_path / "server-data"
    keys = TufKeys.create(tmp_path / "tuf-keys")
    await ok(*keys.init_args(data, root_out=tmp_path / "root.json"))
    bundle = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    other = pki.bundle(tmp_path / "acme-1.1.1.cwb", "1.1.1", 2)
    report = junit_report(tmp_path / "pytest.xml")
    signer = generate_key(f"file:{tmp_path}/evidence.key", lambda: TEST_PASSPHRASE.encode())
    pub = tmp_path / "evidence.pub.pem"
    pub.write_text(public_key_pem(signer.public_key()))
    at = ("--data-dir", str(data))
    extra = ("--campaign-tick", "0.3", "--campaign-approval-threshold", "1")
    with running_server(tmp_path, pki, extra_args=extra) as srv:
        tokens = {}
        for name, role in (("carol", "release-manager"), ("alice", "approver"),
                           ("bob", "approver"), ("dana", "auditor")):  # fmt: skip
            out = await ok("token", "create", name, "--role", role, *at)
            tokens[name] = out.strip().rsplit(" ", 1)[-1]
        await ok("release", "upload", str(bundle), *at, token=tokens["carol"])
        rid = srv.api("GET", "/api/v1/releases")[0]["id"]
        for who in ("alice", "bob"):
            await ok("release", "approve", rid, "--key", keys.uri(who), *at, token=tokens[who])
        await ok("release", "publish", rid, *at, token=tokens["carol"])
        await api(srv, "POST", "/api/v1/sites", json={
            "id": "depot", "name": "Depot", "timezone": "Europe/London",
            "maintenance_windows": ALL_DAY,
        })  # fmt: skip
        async with agents(srv, tmp_path, pki, factory_bundle, STATIONS):
            for sid in STATIONS:
                await api(srv, "PATCH", f"/api/v1/stations/{sid}", json={"site_id": "depot"})
            doc = campaign_doc("ac22-1.1.0", rid)
            cid = as_user(srv, tokens["carol"], "POST", "/api/v1/campaigns", json=doc)["id"]
            as_user(srv, tokens["alice"], "POST", f"/api/v1/campaigns/{cid}/approve")
            await until(lambda: status_is(srv, cid, "completed"), "the campaign to complete", 60)
        srv.api("POST", "/api/v1/audit/checkpoints")  # cover every entry so far

        out_dir = tmp_path / "out"
        pack = out_dir / "ac22"
        auditor = tokens["dana"]
        signing = ("--key", signer.uri, "--commit", COMMIT)
        args = ("evidence", "export", "--test-report", str(report), *signing, *at)
        # Bad input: one clear error, a distinct exit code, nothing written.
        broken = tmp_path / "broken.xml"
        broken.write_text("<testsuites><testsuite>")
        r = await asyncio.to_thread(
            cli, *args[:2], "--campaign", "ac22-1.1.0", "--test-report", str(broken), *signing,
            *at, "-o", str(pack), env={"CHARGEWARD_API_TOKEN": auditor}, check=False,
        )  # fmt: skip
        assert r.returncode == 6 and r.stdout == "", r.stderr
        [line] = r.stderr.splitlines()
        assert line.startswith("error: test report is not well-formed XML")
        refused = await chargeward(*args, "--campaign", "nope", "-o", str(pack), token=auditor)
        assert isinstance(refused.exception, NotFound)
        refused = await chargeward(
            *args, "--campaign", "ac22-1.1.0", "--bundle", str(other), "-o", str(pack),
            token=auditor,
        )  # fmt: skip
        assert isinstance(refused.exception, BundleError)
        assert "not the exported release" in str(refused.exception)
        # A report from another commit than the one named is refused, before the server.
        refused = await chargeward(
            *args, "--campaign", "ac22-1.1.0", "--commit", "d" * 40, "-o", str(pack),
            token=auditor,
        )  # fmt: skip
        assert isinstance(refused.exception, ReportProvenanceRefused)
        assert not out_dir.exists() or not any(out_dir.iterdir())

        out = await ok(
            *args, "--campaign", "ac22-1.1.0", "--bundle", str(bundle), "-o", str(pack), "--zip",
            token=auditor,
        )  # fmt: skip
        assert "1 of" in out and "requirements satisfied" in out
        # For the release, without a bundle: the signed files come from the server.
        by_release = out_dir / "release"
        await ok(*args, "--release", "1.1.0", "-o", str(by_release), token=auditor)
        vkey = (data / "audit" / "checkpoint.vkey").read_text().strip()
    assert_no_crash(srv.proc.output())

    files = check_sums(pack)
    for name in ("evidence.md", "evidence.html", "evidence.json", "VERIFY.md", "evidence.dsse.json",
                 "release/manifest.json", "release/signing-certificate.pem",
                 "release/approvals.json", "audit/proofs.jsonl", "audit/checkpoint.note",
                 "audit/checkpoint.vkey", "tests/pytest.xml"):  # fmt: skip
        assert name in files
    assert (pack / "release/manifest.json").read_bytes() == read_manifest(bundle).to_json()
    assert (pack / "audit/checkpoint.vkey").read_text().strip() == vkey
    ev = json.loads((pack / "evidence.json").read_text())
    assert ev["subject"]["release_id"] == rid and ev["subject"]["campaign"]["id"] == cid
    supply = ev["release"]["files"]["supply_chain"]
    # The bundle's SBOM and scan report travel into the pack, as the manifest lists them.
    manifest = read_manifest(bundle)
    for name in ("sbom.cdx.json", "vulnerability-report.json"):
        listed = manifest.attestation(name)
        assert listed is not None
        assert supply[name] == {"present": True, "file": f"release/{name}", "sha256": listed.sha256}
        assert hashlib.sha256((pack / "release" / name).read_bytes()).hexdigest() == listed.sha256
    assert supply["provenance.dsse.json"]["present"] is False

    # Approvals: who approved the release with which key, and the campaign's second person.
    (proposal,) = ev["approvals"]
    assert proposal["state"] == "published"
    assert sorted(a["approver"] for a in proposal["approvals"]) == ["alice", "bob"]
    (run,) = ev["campaigns"]
    assert run["approved_by"] == "alice" and run["created_by"] == "carol"
    assert {s["station_id"]: s["state"] for s in ev["stations"]} == dict.fromkeys(
        STATIONS, "succeeded"
    )
    assert all(s["timeline"] for s in ev["stations"])

    # Audit entries concerning the release and the campaign, every one proven.
    actions = [e["action"] for e in ev["audit"]["entries"]]
    for action in ("release.upload", "release.published", "campaign.created",
                   "campaign.approved", "campaign.station"):  # fmt: skip
        assert action in actions
    assert actions.count("release.approved") == 2
    assert ev["audit"]["unproven"] == 0 and all(e["proven"] for e in ev["audit"]["entries"])
    text = (pack / "audit/proofs.jsonl").read_text()
    assert verify_proofs(parse_proofs(text.splitlines()), parse_vkey(vkey)).entries == len(actions)

    # The requirements matrix: results from the report only.
    rows = {r["id"]: r for r in ev["tests"]["requirements"]}
    assert rows[PASSING]["satisfied"] and rows[PASSING]["status"] == "satisfied"
    assert not rows[FAILING]["satisfied"] and rows[FAILING]["status"] == "failed"
    assert rows[FAILING]["parts"][0]["tests"][0]["result"] == "failed"
    assert rows[FAILING]["parts"][0]["party"] == "pipeline"
    other_row = rows["ETSI EN 303 645 5.7"]
    assert {t["result"] for p in other_row["parts"] for t in p["tests"]} == {"not run"}
    boot = rows["UK-SCP Sch.1 para 3(4)(a)"]
    assert (boot["status"], boot["satisfied"]) == ("manufacturer to evidence", False)
    assert [p["party"] for p in boot["parts"]] == ["platform"]
    provenance = ev["tests"]["report"]["provenance"]
    assert (provenance["commit"], provenance["same_commit"]) == (COMMIT, True)
    # Signed: the pack and its zip verify under the producer's key.
    for where in (pack, pack.with_name("ac22.zip")):
        out = await ok("evidence", "verify", str(where), "--key", str(pub))
        assert f"from commit {COMMIT}" in out and signer.uri not in out
    page = (pack / "evidence.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert not re.search(r"<(link|script|img)|(src|href)=", page)  # nothing fetched
    assert "not present in this bundle" in (pack / "evidence.md").read_text()

    # The zip holds the same files, in sorted order.
    with zipfile.ZipFile(pack.with_name("ac22.zip")) as zf:
        names = zf.namelist()
        assert names == sorted(names) == [f"ac22/{n}" for n in sorted(files)]
        assert zf.read("ac22/evidence.json") == (pack / "evidence.json").read_bytes()

    release_ev = json.loads((by_release / "evidence.json").read_text())
    assert release_ev["release"]["files"]["source"] == "server"
    assert [c["id"] for c in release_ev["campaigns"]] == [cid]
    check_sums(by_release)

    # Offline, as VERIFY.md says: the proofs verify; a changed proof or entry does not.
    assert "chargeward audit verify audit/proofs.jsonl" in (pack / "VERIFY.md").read_text()
    verify = ("audit", "verify", str(pack / "audit" / "proofs.jsonl"), "--vkey", vkey)
    assert f"verified {len(actions)} entries" in await ok(*verify)
    lines = text.splitlines()
    entry = json.loads(lines[-1])
    hashes = entry["inclusion"]["hashes"]
    hashes[0] = ("0" if hashes[0][0] != "0" else "1") + hashes[0][1:]
    lines[-1] = json.dumps(entry)
    (pack / "audit/proofs.jsonl").write_text("\n".join(lines) + "\n")
    refused = await chargeward(*verify)
    assert isinstance(refused.exception, LogVerificationError)
    assert exit_code_for(refused.exception) == 3
    assert f"entry index {entry['leaf_index']}" in str(refused.exception)
    assert "not in the log under the signed checkpoint" in str(refused.exception)
