"""The reproducible-build check, with tiny real builds (Python scripts run as subprocesses).

Proves that a build depending only on its source and SOURCE_DATE_EPOCH passes; that builds
embedding the clock, randomness or their own directory are caught with both digests; that a
failing, hanging or incomplete build is reported as failed with its exit status and stderr;
that builds see a clean environment; and that declared outputs cannot leave the build tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from chargeward.errors import ConfigError
from chargeward.supply.rebuild import RebuildResult, RebuildStatus, rebuild_check

EPOCH = 1700000000

REPRODUCIBLE = """
import os, pathlib
out = pathlib.Path("out"); out.mkdir(exist_ok=True)
data = pathlib.Path("input.txt").read_bytes() + os.environ["SOURCE_DATE_EPOCH"].encode()
(out / "fw.bin").write_bytes(data)
(out / "stable.txt").write_text("same every time")
"""

LEAKS = {
    "clock": "import time; leak = str(time.time_ns())",
    "randomness": "import os; leak = os.urandom(8).hex()",
    "build path": "import os; leak = os.getcwd()",
}


def source(tmp_path: Path, script: str) -> Path:
    tree = tmp_path / "source"
    tree.mkdir(parents=True)
    (tree / "input.txt").write_text("firmware source\n")
    (tree / "build.py").write_text(script)
    return tree


def build(tree: Path, outputs: list[str], timeout: float = 20, *args: str) -> RebuildResult:
    return rebuild_check([sys.executable, "build.py", *args], tree, outputs, EPOCH, timeout)


def test_a_reproducible_build_passes(tmp_path: Path) -> None:
    tree = source(tmp_path, REPRODUCIBLE)
    result = build(tree, ["out/fw.bin", "out/stable.txt"])
    assert result.status is RebuildStatus.REPRODUCIBLE
    assert result.reproducible and not result.differing and result.failure is None
    fw = result.outputs[0]
    assert fw.path == "out/fw.bin"
    expected = hashlib.sha256(b"firmware source\n" + str(EPOCH).encode()).hexdigest()
    assert fw.first == fw.second == expected
    assert not (tree / "out").exists()  # the source itself is never built in


@pytest.mark.parametrize("leak", sorted(LEAKS))
def test_a_build_embedding_time_randomness_or_its_path_differs(tmp_path: Path, leak: str) -> None:
    script = REPRODUCIBLE + LEAKS[leak] + "\n(out / 'fw.bin').write_text(leak)\n"
    result = build(source(tmp_path, script), ["out/fw.bin", "out/stable.txt"])
    assert result.status is RebuildStatus.DIFFERS
    assert not result.reproducible
    (differing,) = result.differing
    assert differing.path == "out/fw.bin"
    assert len(differing.first) == len(differing.second) == 64
    assert differing.first != differing.second
    stable = result.outputs[1]
    assert stable.same and stable.path == "out/stable.txt"


def test_a_failing_build_is_reported_with_status_and_stderr(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "for i in range(50): print(f'warning {i}', file=sys.stderr)\n"
        "print('error: missing header modem.h', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    result = build(source(tmp_path, script), ["out/fw.bin"])
    assert result.status is RebuildStatus.FAILED
    assert result.outputs == ()
    failure = result.failure
    assert failure is not None
    assert (failure.build, failure.exit_code, failure.reason) == (1, 3, "exit status 3")
    lines = failure.stderr_tail.splitlines()
    assert lines[-1] == "error: missing header modem.h"
    assert len(lines) == 20 and lines[0] == "warning 31"


def test_a_missing_output_fails_the_build(tmp_path: Path) -> None:
    result = build(source(tmp_path, REPRODUCIBLE), ["out/fw.bin", "out/modem.bin"])
    assert result.status is RebuildStatus.FAILED
    assert result.failure is not None
    assert result.failure.reason == "output out/modem.bin was not produced"
    assert result.failure.exit_code == 0


def test_a_hanging_build_is_killed_at_the_timeout(tmp_path: Path) -> None:
    result = build(source(tmp_path, "import time; time.sleep(60)"), ["out/fw.bin"], 0.5)
    assert result.status is RebuildStatus.FAILED
    assert result.failure is not None
    assert result.failure.reason == "timed out after 0.5 s"
    assert result.failure.exit_code is None


def test_a_command_that_cannot_start_fails(tmp_path: Path) -> None:
    tree = source(tmp_path, REPRODUCIBLE)
    result = rebuild_check([str(tmp_path / "no-such-tool")], tree, ["a"], EPOCH, 10)
    assert result.failure is not None
    assert result.failure.reason.startswith(f"cannot run {tmp_path / 'no-such-tool'}")


def test_builds_see_a_clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", "must not leak into builds")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    seen = tmp_path / "seen.jsonl"
    script = REPRODUCIBLE + (
        "import json, sys\n"
        "with open(sys.argv[1], 'a') as fh: fh.write(json.dumps(dict(os.environ)) + '\\n')\n"
    )
    assert build(source(tmp_path, script), ["out/fw.bin"], 20, str(seen)).reproducible
    first, second = (json.loads(line) for line in seen.read_text().splitlines())
    for env in (first, second):
        # a Python build may add LC_CTYPE itself (PEP 538); nothing else appears
        assert set(env) - {"LC_CTYPE"} == {
            "PATH", "HOME", "TMPDIR", "LC_ALL", "TZ", "SOURCE_DATE_EPOCH"
        }  # fmt: skip
        assert (env["LC_ALL"], env["TZ"], env["SOURCE_DATE_EPOCH"]) == ("C", "UTC", str(EPOCH))
        assert env["HOME"] != os.environ.get("HOME")
        assert env["TMPDIR"].startswith(env["HOME"])
    assert first["HOME"] != second["HOME"]


def test_a_shell_command_string_runs_through_sh(tmp_path: Path) -> None:
    tree = source(tmp_path, "")
    command = 'mkdir -p out && printf "%s" "$SOURCE_DATE_EPOCH" > out/stamp'
    result = rebuild_check(command, tree, ["out/stamp"], EPOCH, 10)
    assert result.reproducible
    assert result.command == command


def test_outputs_must_stay_inside_the_build(tmp_path: Path) -> None:
    tree = source(tmp_path, REPRODUCIBLE)
    for bad in ("../outside", "/etc/passwd", "", "out/../../x"):
        with pytest.raises(ConfigError, match="relative path inside the source"):
            build(tree, [bad])
    with pytest.raises(ConfigError, match="declared twice"):
        build(tree, ["out/fw.bin", "out/./fw.bin"])
    (tmp_path / "secret").write_text("not a build output")
    os.symlink(tmp_path / "secret", tree / "link")
    result = build(tree, ["link"])
    assert result.failure is not None
    assert result.failure.reason == "output link points outside the build directory"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    tree = source(tmp_path, REPRODUCIBLE)
    with pytest.raises(ConfigError, match="does not exist"):
        rebuild_check("make", tmp_path / "missing", ["a"], EPOCH, 10)
    with pytest.raises(ConfigError, match="at least one build output"):
        rebuild_check("make", tree, [], EPOCH, 10)
    with pytest.raises(ConfigError, match="empty"):
        rebuild_check("  ", tree, ["a"], EPOCH, 10)
    with pytest.raises(ConfigError, match="negative"):
        rebuild_check("make", tree, ["a"], -1, 10)


def test_progress_is_reported(tmp_path: Path) -> None:
    messages: list[str] = []
    tree = source(tmp_path, REPRODUCIBLE)
    rebuild_check(
        [sys.executable, "build.py"], tree, ["out/fw.bin"], EPOCH, 20, progress=messages.append
    )
    assert messages == [
        "Copying the source for build 1 of 2",
        "Running build 1 of 2",
        "Copying the source for build 2 of 2",
        "Running build 2 of 2",
    ]


def test_the_result_round_trips_through_json(tmp_path: Path) -> None:
    differs = build(source(tmp_path, REPRODUCIBLE + LEAKS["clock"]), ["out/fw.bin"])
    failed = build(source(tmp_path / "f", "raise SystemExit(2)"), ["x"])
    for result in (differs, failed):
        assert RebuildResult.from_json(result.to_json()) == result
    assert failed.failure is not None and failed.failure.exit_code == 2
    for bad, message in [
        (b"{", "not valid JSON"),
        (b'{"status": "maybe"}', "missing or mistyped field"),
        (json.dumps({**differs.to_dict(), "status": "perhaps"}).encode(), "perhaps"),
        (json.dumps({**differs.to_dict(), "sourceDateEpoch": "1"}).encode(), "sourceDateEpoch"),
    ]:
        with pytest.raises(ConfigError, match=message):
            RebuildResult.from_json(bad, "r.json")
