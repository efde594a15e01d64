"""The documentation cannot rot: the MkDocs site builds in strict mode (a broken link fails),
every relative link in README.md, CONTRIBUTING.md and docs/ resolves, every
``chargeward <command> <subcommand>`` the docs name exists, every test file they name exists,
every ADR is in the ADR index, and the README stays a short entry point."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from chargeward.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ADRS = DOCS / "adr"
README = ROOT / "README.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"

# Every Markdown file a reader is sent to; ADRs are records of their time and are left out of
# the checks on commands and test paths (a later ADR supersedes, it does not rewrite).
PAGES = sorted([README, CONTRIBUTING, *DOCS.glob("*.md")])
ALL_MARKDOWN = sorted([*PAGES, *ADRS.glob("*.md")])

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_COMMAND = re.compile(r"(?<![\w./-])chargeward\s+([a-z][\w|-]*)(?:\s+([a-z][\w|-]*))?")
_TEST_PATH = re.compile(r"(?<![\w/])(tests/[\w/]+\.py)")


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    return subprocess.run(
        [*command, "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docs_site_builds_in_strict_mode(tmp_path: Path) -> None:
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "adr" / "index.html").is_file()


def test_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "campaigns.md").open("a") as page:
        page.write("\nSee [the gates](no-such-page.md).\n")
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stdout + result.stderr


def _links(path: Path) -> Iterator[str]:
    text = _FENCE.sub("", path.read_text())
    for target in _LINK.findall(_CODE_SPAN.sub("", text)):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
            yield target


@pytest.mark.parametrize("path", ALL_MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = [t for t in _links(path) if not (path.parent / t.partition("#")[0]).exists()]
    assert broken == []


def _code(path: Path) -> Iterator[str]:
    """The code a page shows: fenced blocks (continuation lines joined) and inline spans."""
    text = path.read_text()
    for block in _FENCE.findall(text):
        yield block.replace("\\\n", " ")
    for span in _CODE_SPAN.findall(_FENCE.sub("", text)):
        yield re.sub(r"\|\s+", "|", " ".join(span.split()))


def _named_commands() -> dict[tuple[str, ...], set[str]]:
    """(command, subcommand or nothing) -> the pages naming it; ``a|b`` names both."""
    named: dict[tuple[str, ...], set[str]] = {}
    for path in PAGES:
        for code in _code(path):
            for first, second in _COMMAND.findall(code):
                for group in filter(None, first.split("|")):
                    subs = [s for s in second.split("|") if s] if second else []
                    keys: list[tuple[str, ...]] = [(group, s) for s in subs] or [(group,)]
                    for key in keys:
                        named.setdefault(key, set()).add(str(path.relative_to(ROOT)))
    return named


def _command_tree() -> dict[str, set[str]]:
    """Top-level command -> its subcommands (empty for a command that takes none)."""
    root: Any = typer.main.get_command(app)
    return {
        name: set(getattr(cmd, "commands", None) or ())
        for name, cmd in root.commands.items()  # typer's click groups: duck-typed
    }


def test_every_cli_command_named_in_the_docs_exists() -> None:
    tree = _command_tree()
    named = _named_commands()
    assert len(named) >= 40  # the parser still finds the commands
    missing = []
    for key, pages in sorted(named.items()):
        if key[0] not in tree:
            missing.append(f"chargeward {key[0]} (in {sorted(pages)})")
        elif len(key) == 2 and tree[key[0]] and key[1] not in tree[key[0]]:
            missing.append(f"chargeward {' '.join(key)} (in {sorted(pages)})")
    assert missing == []


def test_every_command_group_in_the_docs_answers_help() -> None:
    runner = CliRunner()
    groups = sorted({key[0] for key in _named_commands()} & set(_command_tree()))
    for group in groups:
        result = runner.invoke(app, [group, "--help"])
        assert result.exit_code == 0, (group, result.output)
        assert "Usage:" in result.output


def test_every_test_file_named_in_the_docs_exists() -> None:
    missing = sorted(
        f"{name} (in {path.relative_to(ROOT)})"
        for path in PAGES
        for name in set(_TEST_PATH.findall(path.read_text()))
        if not (ROOT / name).is_file()
    )
    assert missing == []


def test_every_adr_is_in_the_index() -> None:
    index = (ADRS / "README.md").read_text()
    adrs = sorted(p.name for p in ADRS.glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert len(adrs) >= 28
    assert [name for name in adrs if f"]({name})" not in index] == []
    template = (ADRS / "template.md").read_text()
    for section in ("Status:", "## Context", "## Decision", "## Consequences"):
        assert section in template


def test_readme_is_a_short_entry_point() -> None:
    text = README.read_text()
    assert len(text.encode()) < 10_000
    assert text.splitlines()[2:6] == [
        "```",
        "make demo    # set up, then sign a release and update simulated chargers over OCPP 2.0.1",
        "make test    # set up, then lint, type-check and run the tests "
        "(make test-slow: the slow suites)",
        "```",
    ]
