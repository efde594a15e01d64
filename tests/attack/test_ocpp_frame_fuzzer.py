"""Coverage-guided fuzzing of OCPP-J frame handling with atheris (tests/fuzz/ocpp_frames.py).

The harness runs in a subprocess for a fixed number of inputs, from a seed corpus of valid
frames and a dictionary of OCPP-J tokens, with a fixed libFuzzer seed.  libFuzzer exits with
an error, and writes the input to ``crash-*``, at the first frame the CSMS or the charger
handles other than OCPP-J demands; that fails this test, with the frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fuzzing import FuzzReport
from tests.support.nodeids import ROOT
from tests.support.ocpp_frames import dictionary, seed_frames

pytestmark = pytest.mark.timeout(90)

RUNS = 15_000
MAX_SECONDS = 40  # a slow or busy machine stops here, with fewer runs
MIN_RUNS = 3_000


@pytest.mark.slow  # 45 s beside the suite's other tests on 2 cores
def test_coverage_guided_fuzzing_finds_no_bad_answer_to_any_frame(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in seed_frames():
        (corpus / hashlib.sha256(seed.encode()).hexdigest()[:16]).write_text(seed)
    (tmp_path / "ocpp.dict").write_text(dictionary())
    tally = tmp_path / "tally.json"
    report = FuzzReport("ocpp_frames_atheris")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.ocpp_frames",
            str(corpus),
            f"-runs={RUNS}",
            f"-max_total_time={MAX_SECONDS}",
            "-seed=1",
            "-max_len=8192",
            f"-dict={tmp_path / 'ocpp.dict'}",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "CHARGEWARD_FUZZ_TALLY": str(tally),
            "PYTHONPATH": str(ROOT),
            "PYTHONHASHSEED": "0",
        },
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS + 30,
    )
    crashes = [p.read_bytes() for p in tmp_path.glob("crash-*")]
    assert run.returncode == 0 and crashes == [], (crashes, run.stderr[-4000:])
    done = re.search(r"^Done (\d+) runs in (\d+) second", run.stderr, re.MULTILINE)
    assert done is not None, run.stderr[-2000:]
    runs, seconds = int(done[1]), int(done[2])
    outcomes = json.loads(tally.read_text())
    for outcome, n in outcomes.items():
        if outcome != "inputs":
            receiver, _, kind = outcome.rpartition(" ")
            report.count(receiver, kind, n)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", run.stderr)
    report.write(frames=runs, coverage=int(coverage[-1][0]), features=int(coverage[-1][1]))
    assert outcomes["inputs"] == runs  # each input was checked by all three receivers
    assert report.tried == 3 * runs
    assert runs == RUNS or (seconds >= MAX_SECONDS - 1 and runs >= MIN_RUNS)
