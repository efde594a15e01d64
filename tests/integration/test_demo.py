"""`chargeward demo` (what `make demo` runs) completes and exits 0 with a summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_updates_every_charger(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "chargeward",
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--stations",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2/2 chargers updated" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    for sid in ("DEMO-001", "DEMO-002"):
        log = (tmp_path / "demo" / f"agent-{sid}.log").read_text()
        assert "firmware status Installed" in log
