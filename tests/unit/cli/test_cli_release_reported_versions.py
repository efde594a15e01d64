"""``release upload --reported-version/--reported-version-pattern`` refuses a bad declaration
itself, naming the option, before it reads the bundle or contacts a server (ADR 0037)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app, exit_code_for
from chargeward.errors import InvalidValue


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--reported-version-pattern", "AC22=(a+)+", "--reported-version-pattern: '(a+)+' repeats"),
        ("--reported-version-pattern", "AC22=(", "--reported-version-pattern: '(' is not a"),
        ("--reported-version", "TP-FW 1.1.0-b7", "--reported-version: 'TP-FW 1.1.0-b7' is not"),
    ],
)
def test_a_bad_declaration_is_refused_before_uploading(
    runner: CliRunner, tmp_path: Path, option: str, value: str, says: str
) -> None:
    bundle = tmp_path / "r.cwb"
    bundle.write_bytes(b"not read")
    server = "http://127.0.0.1:9"  # nothing listens: the refusal comes first
    result = runner.invoke(
        app, ["release", "upload", str(bundle), option, value, "--server", server]
    )
    error = result.exception
    assert isinstance(error, InvalidValue) and exit_code_for(error) == 6, result.output
    assert str(error).startswith(says)
