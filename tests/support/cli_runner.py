"""Driving the CLI in-process (typer's CliRunner) for unit tests."""

from __future__ import annotations

from typer.testing import CliRunner

from chargeward.cli.main import app

RUNNER_PASSPHRASE = "correct horse battery staple"  # generated test keys only


def ok(runner: CliRunner, *args: str) -> str:
    """Run ``chargeward ARGS``; it must exit 0.  Returns its output."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def make_root(runner: CliRunner, name: str) -> None:
    """``pki init-root`` with a new key at ``keys/<name>.key``, certificate ``<name>.pem``."""
    ok(
        runner,
        *("pki", "init-root", "--key", f"file:keys/{name}.key", "--out", f"{name}.pem"),
        *("--cn", f"{name} Manufacturer Root CA", "--org", name, "--generate-key"),
    )
