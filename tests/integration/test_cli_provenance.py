"""``chargeward provenance create/verify`` and ``chargeward release rebuild-check``.

Proves the command-line flow: a rebuild check's JSON feeds signed provenance, which verifies
with the public key and the subject files (with a file key and with a SoftHSM2 token key); a
changed subject is refused with one line and exit code 3; bad input leaves no file behind;
a non-reproducible or failing build exits non-zero after recording its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto import generate_key, public_key_pem
from chargeward.errors import ConfigError, Conflict
from tests.support.cli_runner import RUNNER_PASSPHRASE, ok
from tests.support.softhsm import use_softhsm

COMMIT = "0123456789abcdef0123456789abcdef01234567"
BUILD = "mkdir -p out && cat input.txt > out/fw.bin && echo $SOURCE_DATE_EPOCH >> out/fw.bin"


@pytest.fixture
def project(runner: CliRunner, tmp_path: Path) -> Path:
    """A release key (public half in release.pub.pem), a source tree and two subject files."""
    signer = generate_key("file:keys/release.pem", lambda: RUNNER_PASSPHRASE.encode())
    (tmp_path / "release.pub.pem").write_text(public_key_pem(signer.public_key()))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "input.txt").write_text("firmware source\n")
    (tmp_path / "main.cwfw").write_bytes(b"image")
    (tmp_path / "acme-1.2.0.cwb").write_bytes(b"bundle")
    return tmp_path


def rebuild(runner: CliRunner, command: str, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [
            *("release", "rebuild-check", "--command", command, "--source", "src"),
            *("--output", "out/fw.bin", "--source-date-epoch", "1700000000", *extra),
        ],
        env={"COLUMNS": "250"},  # digests unfolded
    )
    return result.exit_code, result.output


def create(runner: CliRunner, key: str = "file:keys/release.pem", *extra: str) -> str:
    return ok(
        runner,
        *("provenance", "create", "--subject", "main.cwfw", "--subject", "acme-1.2.0.cwb"),
        *("--source-repo", "https://git.example/acme/fw", "--source-commit", COMMIT),
        *("--build-command", BUILD, "--key", key, "-o", "provenance.dsse.json", *extra),
    )


def verify_args(*subjects: str) -> list[str]:
    args = ["provenance", "verify", "provenance.dsse.json", "--public-key", "release.pub.pem"]
    for subject in subjects or ("main.cwfw", "acme-1.2.0.cwb"):
        args += ["--subject", subject]
    return args


def test_rebuild_check_then_provenance_then_verify(runner: CliRunner, project: Path) -> None:
    code, output = rebuild(runner, BUILD, "--json", "rebuild.json")
    assert code == 0, output
    assert "reproducible" in output
    assert json.loads((project / "rebuild.json").read_text())["status"] == "reproducible"

    (project / "sbom.cdx.json").write_text("{}")
    created = create(
        runner,
        "file:keys/release.pem",
        "--rebuild-result",
        "rebuild.json",
        "--sbom",
        "sbom.cdx.json",
    )
    assert "Wrote provenance.dsse.json" in created
    envelope = json.loads((project / "provenance.dsse.json").read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"

    verified = ok(runner, *verify_args())
    assert "verified: provenance.dsse.json" in verified
    assert "Rebuild check" in verified and "reproducible" in verified
    assert COMMIT in verified


def test_provenance_with_a_token_key(
    runner: CliRunner, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm = use_softhsm(project / "softhsm", monkeypatch)
    monkeypatch.setenv("CHARGEWARD_PKCS11_PIN", hsm.pin)
    signer = generate_key(hsm.uri("release"), hsm.pin_source)
    (project / "release.pub.pem").write_text(public_key_pem(signer.public_key()))
    create(runner, hsm.uri("release"))
    assert "verified" in ok(runner, *verify_args())


def test_create_refuses_to_overwrite_and_bad_input_leaves_nothing(
    runner: CliRunner, project: Path
) -> None:
    before = set(os.listdir(project))
    bad = runner.invoke(
        app,
        [
            *("provenance", "create", "--subject", "main.cwfw", "--source-repo", "r"),
            *("--source-commit", "abc", "--key", "file:keys/release.pem", "-o", "p.json"),
        ],
    )
    assert isinstance(bad.exception, ConfigError)
    assert "source commit" in str(bad.exception)
    missing = runner.invoke(
        app,
        [
            *("provenance", "create", "--subject", "nope.bin", "--source-repo", "r"),
            *("--source-commit", COMMIT, "--key", "file:keys/release.pem", "-o", "p.json"),
        ],
    )
    assert isinstance(missing.exception, ConfigError)
    assert "nope.bin" in str(missing.exception)
    assert set(os.listdir(project)) == before  # no output, no temporary file

    create(runner)
    again = runner.invoke(app, ["provenance", "create", *create_args()])
    assert isinstance(again.exception, Conflict)


def create_args() -> list[str]:
    return [
        *("--subject", "main.cwfw", "--source-repo", "r", "--source-commit", COMMIT),
        *("--key", "file:keys/release.pem", "-o", "provenance.dsse.json"),
    ]


def test_a_changed_subject_is_one_line_and_exit_3(runner: CliRunner, project: Path) -> None:
    create(runner)
    (project / "main.cwfw").write_bytes(b"image, patched")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEWARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "chargeward", *verify_args()],
        cwd=project,
        env={**env, "COLUMNS": "300"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: subject-digest: subject 'main.cwfw' has SHA-256")


def test_verify_names_an_unusable_public_key_file(runner: CliRunner, project: Path) -> None:
    create(runner)
    (project / "release.pub.pem").write_text("not a key")
    result = runner.invoke(app, verify_args())
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == "public key release.pub.pem is not a PEM public key"


def test_verify_refuses_a_subject_the_provenance_does_not_name(
    runner: CliRunner, project: Path
) -> None:
    create(runner)
    (project / "modem.cwfw").write_bytes(b"modem")
    result = runner.invoke(app, verify_args("main.cwfw", "acme-1.2.0.cwb", "modem.cwfw"))
    assert getattr(result.exception, "reason", None) == "subject-missing"


def test_rebuild_check_that_differs_exits_3_after_writing_json(
    runner: CliRunner, project: Path
) -> None:
    code, output = rebuild(runner, "mkdir -p out && pwd > out/fw.bin", "--json", "r.json")
    assert code == 3
    assert "not reproducible: out/fw.bin differ" in output
    result = json.loads((project / "r.json").read_text())
    assert result["status"] == "differs"
    (digests,) = result["outputs"]
    assert digests["first"] != digests["second"]
    assert digests["first"] in output and digests["second"] in output


def test_rebuild_check_of_a_failing_build_exits_1(runner: CliRunner, project: Path) -> None:
    code, output = rebuild(runner, "echo 'cc: fatal error' >&2; exit 2", "--json", "r.json")
    assert code == 1
    assert "build 1 failed: exit status 2" in output
    assert "cc: fatal error" in output
    assert json.loads((project / "r.json").read_text())["failure"]["exitCode"] == 2


def test_rebuild_check_needs_a_source_date_epoch_outside_git(
    runner: CliRunner, project: Path
) -> None:
    result = runner.invoke(
        app,
        ["release", "rebuild-check", "--command", BUILD, "--source", "src", "--output", "x"],
    )
    assert isinstance(result.exception, ConfigError)
    assert "--source-date-epoch" in str(result.exception)
