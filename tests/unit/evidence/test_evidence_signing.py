"""The evidence pack's signature: who produced it, every file covered, and a matrix that is
what the pack's own report gives; read back from the directory or the zip."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from chargeward.crypto.keys import Signer, generate_key
from chargeward.errors import ConfigError
from chargeward.evidence.pack import Evidence, pack_files, read_pack, write_pack
from chargeward.evidence.signing import ENVELOPE, PackRefused, sign_pack, verify_pack
from tests.support.evidence import COMMIT_A, all_mapped, collect_release, junit
from tests.support.fleet import TEST_PASSPHRASE, Pki

SKIPPED_NODE = "tests/unit/agent/test_agent_bootloader.py::test_tampered_active_slot_is_not_booted"


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    d = tmp_path_factory.mktemp("key")
    return generate_key(f"file:{d}/evidence.key", lambda: TEST_PASSPHRASE.encode())


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    d = tmp_path_factory.mktemp("release")
    bundle = Pki.create(d / "pki").bundle(d / "acme-1.0.0.cwb", "1.0.0", 1)
    report = junit({**all_mapped("passed"), SKIPPED_NODE: "skipped"}, commit=COMMIT_A)
    return collect_release(bundle, report, commit=COMMIT_A)


def test_a_signed_pack_verifies_and_names_its_signer_and_report(
    evidence: Evidence, signer: Signer
) -> None:
    files = pack_files(evidence, signer)
    checked = verify_pack(files, [signer.public_key()])
    data = json.loads(files["evidence.json"])
    assert checked.keyid == data["signature"]["keyid"]
    assert checked.report_commit == COMMIT_A and checked.same_commit
    assert checked.report_sha256 == data["tests"]["report"]["sha256"]
    assert checked.files == len(files)
    assert data["signature"]["keyid"] in files["VERIFY.md"].decode()
    assert "chargeward evidence verify . --key" in files["VERIFY.md"].decode()
    # The pack shows who meets what: 3(4)(a) for the manufacturer, simulated by the agent.
    md = files["evidence.md"].decode()
    (line,) = [s for s in md.splitlines() if "UK-SCP Sch.1 para 3(4)(a)" in s]
    assert "**manufacturer to evidence**" in line and "Platform" in line
    assert "simulation incomplete" in line  # one of its simulations was skipped
    assert "satisfied" not in line


def test_an_unsigned_added_or_missing_file_is_refused(evidence: Evidence, signer: Signer) -> None:
    files = pack_files(evidence, signer)
    keys = [signer.public_key()]
    with pytest.raises(PackRefused, match=re.escape("not signed: it has no evidence.dsse.json")):
        verify_pack({k: v for k, v in files.items() if k != ENVELOPE}, keys)
    with pytest.raises(
        PackRefused, match=re.escape("notes.md: not covered by the pack's signature")
    ):
        verify_pack({**files, "notes.md": b"all good\n"}, keys)
    with pytest.raises(
        PackRefused, match=re.escape("VERIFY.md: listed in the signed statement but missing")
    ):
        verify_pack({k: v for k, v in files.items() if k != "VERIFY.md"}, keys)
    with pytest.raises(PackRefused, match=re.escape("evidence.dsse.json: malformed")):
        verify_pack({**files, ENVELOPE: b"{}"}, keys)


def test_a_signed_matrix_that_its_own_report_contradicts_is_refused(
    evidence: Evidence, signer: Signer
) -> None:
    """Even under the right key, evidence.json must be what its report gives."""
    files = pack_files(evidence, signer)
    data = json.loads(files["evidence.json"])
    (row,) = [r for r in data["tests"]["requirements"] if r["id"] == "UK-SCP Sch.1 para 3(4)(a)"]
    test = next(t for t in row["parts"][0]["tests"] if t["node_id"] == SKIPPED_NODE)
    test["result"], test["cases"] = "passed", {"passed": 1}
    files["evidence.json"] = json.dumps(data).encode()
    del files[ENVELOPE]
    files[ENVELOPE] = sign_pack(files, data, signer)
    with pytest.raises(
        PackRefused, match=re.escape("is 'passed' there but 'skipped' in tests/pytest.xml")
    ):
        verify_pack(files, [signer.public_key()])
    # A platform part claimed as satisfied, its tests untouched.
    data = json.loads(pack_files(evidence, signer)["evidence.json"])
    (row,) = [r for r in data["tests"]["requirements"] if r["id"] == "UK-SCP Sch.1 para 3(4)(a)"]
    row["parts"][0]["status"] = "satisfied"
    files["evidence.json"] = json.dumps(data).encode()
    del files[ENVELOPE]
    files[ENVELOPE] = sign_pack(files, data, signer)
    with pytest.raises(PackRefused, match="the platform part says 'satisfied'"):
        verify_pack(files, [signer.public_key()])


def test_the_directory_and_the_zip_read_back_the_same(
    evidence: Evidence, signer: Signer, tmp_path: Path
) -> None:
    made = write_pack(evidence, tmp_path / "pack", signer, zip_too=True)
    assert [p.name for p in made] == ["pack", "pack.zip"]
    files = read_pack(tmp_path / "pack")
    assert read_pack(tmp_path / "pack.zip") == files
    verify_pack(files, [signer.public_key()])
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("pack/../../etc/passwd", b"x")
    with pytest.raises(ConfigError, match="is not a pack file"):
        read_pack(evil)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="neither a pack directory nor a pack zip"):
        read_pack(tmp_path / "junk.zip")
