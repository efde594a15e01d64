"""Attacks on an evidence pack: the evidence a regulator is shown must be what the signed test
run gave, for the commit the pack names.

A pack is built and signed once; each attack changes a copy and ``chargeward evidence verify``
(with the producer's pinned public key) must refuse it: exit status 3, one line naming the
changed file.  A pack built from another commit's test report is refused at export.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chargeward.cli.main import app, exit_code_for
from chargeward.crypto.keys import generate_key, public_key_pem
from chargeward.errors import ChargewardError
from chargeward.evidence.pack import requirements, write_pack
from tests.support.evidence import COMMIT_A, COMMIT_B, all_mapped, collect_release, junit
from tests.support.fleet import TEST_PASSPHRASE, cli

FAILING = "UK-SCP Sch.1 para 2"


def _pass() -> bytes:
    return TEST_PASSPHRASE.encode()


@pytest.fixture(scope="module")
def failing_node() -> str:
    return {r.id: r for r in requirements()}[FAILING].tests[0]


@pytest.fixture(scope="module")
def producer(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The pack producer's signing key URI and its public key (pinned by the reader)."""
    d = tmp_path_factory.mktemp("producer")
    signer = generate_key(f"file:{d}/evidence.key", _pass)
    (d / "evidence.pub.pem").write_text(public_key_pem(signer.public_key()))
    return signer.uri, d / "evidence.pub.pem"


@pytest.fixture(scope="module")
def signed_pack(
    tmp_path_factory: pytest.TempPathFactory,
    factory_bundle: Path,
    producer: tuple[str, Path],
    failing_node: str,
) -> Path:
    """A signed pack whose report has one failing test (in FAILING), every other passing."""
    from chargeward.crypto.keys import load_signer

    report = junit({**all_mapped("passed"), failing_node: "failed"}, commit=COMMIT_A)
    evidence = collect_release(factory_bundle, report, commit=COMMIT_A)
    out = tmp_path_factory.mktemp("packs") / "pack"
    write_pack(evidence, out, load_signer(producer[0], _pass))
    return out


def verify(pack: Path, pub: Path) -> Result:
    return CliRunner().invoke(app, ["evidence", "verify", str(pack), "--key", str(pub)])


def refused(result: Result) -> str:
    """The one-line refusal of a verify run (exit status 3)."""
    assert isinstance(result.exception, ChargewardError), (result.output, result.exception)
    assert exit_code_for(result.exception) == 3
    message = str(result.exception)
    assert "\n" not in message
    return message


def copy_of(pack: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    return copy


def resum(pack: Path) -> None:
    """What a careful forger does next: rewrite SHA256SUMS to match the changed files."""
    names = sorted(
        p.relative_to(pack).as_posix()
        for p in pack.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "evidence.dsse.json")
    )
    (pack / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((pack / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    )


def test_status_flipped_from_failed_to_passed_after_signing_is_refused(
    signed_pack: Path, producer: tuple[str, Path], tmp_path: Path, failing_node: str
) -> None:
    pub = producer[1]
    assert verify(signed_pack, pub).exit_code == 0  # the untouched pack verifies
    pack = copy_of(signed_pack, tmp_path)
    ev = json.loads((pack / "evidence.json").read_text())
    (row,) = [r for r in ev["tests"]["requirements"] if r["id"] == FAILING]
    part = row["parts"][0]
    assert part["status"] == "failed" and part["tests"][0]["node_id"] == failing_node
    # The attack: the failed test and its requirement now read as passed.
    part["tests"][0]["result"], part["status"] = "passed", "satisfied"
    row["status"] = "manufacturer to evidence"
    (pack / "evidence.json").write_text(json.dumps(ev, indent=2, sort_keys=True) + "\n")
    resum(pack)

    message = refused(verify(pack, pub))
    assert (
        message
        == "evidence.json: SHA-256 differs from the signed statement (changed after signing)"
    )
    # One line on stderr and status 3 from the real command, too.
    r = cli("evidence", "verify", str(pack), "--key", str(pub), check=False)
    assert (r.returncode, r.stdout) == (3, "")
    assert r.stderr.strip().splitlines() == [f"error: {message}"]

    # Re-signing the edited pack with the forger's own key does not help: the reader pins
    # the producer's key.
    from chargeward.evidence.pack import read_pack
    from chargeward.evidence.signing import ENVELOPE, sign_pack

    forger = generate_key(f"file:{tmp_path}/forger.key", _pass)
    files = read_pack(pack)
    del files[ENVELOPE]
    (pack / ENVELOPE).write_bytes(sign_pack(files, ev, forger))
    assert "not signed by the key given" in refused(verify(pack, pub))


def test_pack_from_another_commits_report_is_refused_or_says_so(
    factory_bundle: Path, producer: tuple[str, Path], tmp_path: Path, failing_node: str
) -> None:
    report = tmp_path / "pytest.xml"
    report.write_bytes(junit(all_mapped("passed"), commit=COMMIT_B))  # all green, commit B
    out = tmp_path / "out"
    args = ["evidence", "export", "--release", "1.0.0", "--test-report", str(report),
            "--key", producer[0], "--commit", COMMIT_A, "-o", str(out)]  # fmt: skip
    # Refused before the server is asked anything (there is none), nothing written.
    runner = CliRunner(env={"CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE})
    assert refused(runner.invoke(app, args)) == (
        f"the test report was produced under commit {COMMIT_B}, not {COMMIT_A}: run the "
        "tests at that commit (or pass --allow-other-commit to build a pack that says so)"
    )
    assert not out.exists()
    # A report that does not say which commit it came from is refused too.
    report.write_bytes(junit(all_mapped("passed"), commit=None))
    assert "does not name the commit it ran under" in refused(runner.invoke(app, args))
    assert not out.exists()

    # Accepted only when asked, and then the signed pack says so wherever it is read.
    from chargeward.crypto.keys import load_signer

    evidence = collect_release(
        factory_bundle, junit(all_mapped("passed"), commit=COMMIT_B), commit=COMMIT_A,
        allow_other_commit=True,
    )  # fmt: skip
    write_pack(evidence, out, load_signer(producer[0], _pass))
    ev = json.loads((out / "evidence.json").read_text())
    assert ev["tests"]["report"]["provenance"] | {"runs": None} == {
        "commit": COMMIT_B, "dirty": False, "expected_commit": COMMIT_A, "same_commit": False,
        "runs": None,
    }  # fmt: skip
    assert (
        f"**Warning: the test report was produced under commit `{COMMIT_B}`, not under "
        f"`{COMMIT_A}`" in (out / "evidence.md").read_text()
    )
    result = verify(out, producer[1])
    assert result.exit_code == 0, result.output
    assert f"from commit {COMMIT_B} (another commit than the pack's" in result.output
    # Claiming the same commit after signing is an edit like any other.
    ev["tests"]["report"]["provenance"]["same_commit"] = True
    (out / "evidence.json").write_text(json.dumps(ev))
    assert refused(verify(out, producer[1])).startswith("evidence.json: SHA-256 differs")


def test_report_with_a_failing_test_swapped_for_a_passing_one_is_detected(
    signed_pack: Path, producer: tuple[str, Path], tmp_path: Path, failing_node: str
) -> None:
    pack = copy_of(signed_pack, tmp_path)
    xml = (pack / "tests/pytest.xml").read_bytes()
    recorded = json.loads((pack / "evidence.json").read_text())["tests"]["report"]["sha256"]
    assert hashlib.sha256(xml).hexdigest() == recorded
    failure = b'<failure message="assert False">assert False</failure>'
    assert xml.count(failure) == 1
    (pack / "tests/pytest.xml").write_bytes(xml.replace(failure, b""))  # now it "passed"
    resum(pack)
    assert refused(verify(pack, producer[1])) == (
        "tests/pytest.xml: SHA-256 differs from the signed statement (changed after signing)"
    )
    # A forger who also rewrites the digest evidence.json records only moves the mismatch.
    ev = json.loads((pack / "evidence.json").read_text())
    ev["tests"]["report"]["sha256"] = hashlib.sha256(xml.replace(failure, b"")).hexdigest()
    (pack / "evidence.json").write_text(json.dumps(ev))
    resum(pack)
    assert refused(verify(pack, producer[1])).startswith("evidence.json: SHA-256 differs")
