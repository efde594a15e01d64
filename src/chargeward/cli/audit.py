"""``chargeward audit``: export the audit log and verify an export offline::

    $ chargeward audit export --out audit.jsonl              # through the running server's API
    $ chargeward audit export --out audit.jsonl --offline    # from the data directory's database
    $ chargeward audit verify audit.jsonl --vkey "$(cat pinned.vkey)" --checkpoint kept.note
    $ chargeward audit verify pack/audit/proofs.jsonl --vkey "$(cat pinned.vkey)"

The export is JSON lines: a header (format, origin, verifier key), every signed checkpoint
note, then every entry with its leaf index and the leaf hash stored when it was appended.
``verify`` needs nothing but the file (and the pinned verifier key): it recomputes every
leaf, the root at every checkpoint size, each checkpoint's signature, consistency between
checkpoints (also those kept elsewhere, ``--checkpoint``) and the two-person rules
(:mod:`chargeward.audit.verify`).  On failure it prints one line naming the first bad entry
and exits with status 3.  ``verify`` also checks the inclusion proofs of an evidence pack
(:mod:`chargeward.audit.proofs`): selected entries, each proven against one signed checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import Progress

from chargeward.audit.checkpoint import parse_vkey
from chargeward.audit.leaves import format_time
from chargeward.audit.proofs import is_proofs_file, parse_proofs, verify_proofs
from chargeward.audit.verify import EXPORT_FORMAT, parse_export, verify_export
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console, err_console
from chargeward.errors import ConfigError
from chargeward.progress import progress_bar as bar_on

app = typer.Typer(no_args_is_help=True)
PAGE = 10_000


def progress_bar() -> Progress:
    """A transient progress bar on stderr for long exports."""
    return bar_on(err_console)


def _line(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    out.write("\n")


def _from_api(data_dir: Path, server: str | None) -> tuple[dict[str, Any], Iterator[Any]]:
    from chargeward.cli.apiclient import ApiClient

    api = ApiClient(data_dir, server)
    head = api.request("GET", "/api/v1/audit/tree")
    header = {
        "size": head["size"],
        "vkey": api.text("GET", "/api/v1/audit/vkey").strip(),
        "checkpoints": [c["note"] for c in api.request("GET", "/api/v1/audit/checkpoints")],
    }

    def entries() -> Iterator[Any]:
        start = 0
        while True:
            page = api.request("GET", "/api/v1/audit", params={"start": start, "limit": PAGE})
            yield from page
            if len(page) < PAGE:
                return
            start = page[-1]["leaf_index"] + 1

    return header, entries()


def _from_database(data_dir: Path) -> tuple[dict[str, Any], Iterator[Any]]:
    from chargeward.audit import entries as read_entries
    from chargeward.audit import log
    from chargeward.cli.common import in_session

    async def read(s: Any) -> tuple[int, list[str], list[Any]]:
        current = await log.head(s)
        notes = [c.note for c in await log.checkpoints(s)]
        rows = await read_entries(s, limit=max(current.size, 1))
        return current.size, notes, rows

    size, notes, rows = in_session(data_dir, read, settled=True)
    vkey_path = data_dir / log.VKEY_FILE
    vkey = vkey_path.read_text().strip() if vkey_path.exists() else None
    views = (
        {
            "id": r.id,
            "leaf_index": r.leaf_index,
            "leaf_hash": r.leaf_hash.hex(),
            "time": format_time(r.time),
            "actor": r.actor,
            "action": r.action,
            "target": r.target,
            "transaction_id": r.transaction_id,
            "details": r.details,
        }
        for r in rows
    )
    return {"size": size, "vkey": vkey, "checkpoints": notes}, views


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="Write the export here (JSON lines).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Read the data directory's database instead of the server's API."
        ),
    ] = False,
) -> None:
    """Export every entry (with its leaf index), every checkpoint and the verifier key."""
    header, entries = _from_database(data_dir) if offline else _from_api(data_dir, server)
    count = 0
    with out.open("w", encoding="utf-8") as fh, progress_bar() as progress:
        task = progress.add_task("exporting audit entries", total=header["size"])
        _line(
            fh,
            {
                "type": "header",
                "format": EXPORT_FORMAT,
                "vkey": header["vkey"],
                "size": header["size"],
                "exported_at": format_time(dt.datetime.now(dt.UTC)),
            },
        )
        for note in header["checkpoints"]:
            _line(fh, {"type": "checkpoint", "note": note})
        for entry in entries:
            _line(fh, {"type": "entry", **entry})
            count += 1
            progress.advance(task)
    console.print(f"exported {count} entries and {len(header['checkpoints'])} checkpoints to {out}")


def _read_vkey(value: str) -> str:
    path = Path(value)
    if "+" not in value and path.exists():
        return path.read_text().strip()
    return value.strip()


def _pinned(vkey: str | None, embedded: str | None) -> str:
    """The verifier key to check against: ``--vkey``, else (with a warning) the file's own."""
    if vkey:
        return _read_vkey(vkey)
    if not embedded:
        raise ConfigError("no verifier key: pass --vkey (the file names none)")
    err_console.print("warning: trusting the verifier key inside the file; pin one with --vkey")
    return embedded


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An export.")],
    vkey: Annotated[
        str | None,
        typer.Option(help="The pinned verifier key (text or a file holding it)."),
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            help="A checkpoint note kept outside the log (repeatable).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    origin: Annotated[
        str | None, typer.Option(help="The log's origin (default: the key's name).")
    ] = None,
) -> None:
    """Verify an export (or an evidence pack's proofs) offline; exits 3 naming the first bad
    entry."""
    with file.open(encoding="utf-8") as fh:
        if is_proofs_file(fh.readline()):
            fh.seek(0)
            _verify_proofs(fh, vkey, origin)
            return
        fh.seek(0)
        parsed = parse_export(fh)
    pinned = _pinned(vkey, parsed.vkey)
    external = [p.read_text(encoding="utf-8") for p in checkpoint or []]
    report = verify_export(parsed, parse_vkey(pinned), external=external, origin=origin)
    console.print(
        f"verified {report.entries} entries: root {report.root_hash.hex()}; "
        f"{report.checkpoints} checkpoint size(s), signed up to {report.signed_size}; "
        f"{report.rules_checked} campaign(s) and publication(s) follow the rules"
    )
    if report.signed_size < report.entries:
        console.print(
            f"note: entries {report.signed_size}..{report.entries - 1} are not covered by a "
            "signed checkpoint yet"
        )


def _verify_proofs(lines: IO[str], vkey: str | None, origin: str | None) -> None:
    proofs = parse_proofs(lines)
    report = verify_proofs(proofs, parse_vkey(_pinned(vkey, proofs.vkey)), origin=origin)
    console.print(
        f"verified {report.entries} entries: each is in the log under the checkpoint signed "
        f"at size {report.checkpoint.size} (root {report.checkpoint.root_hash.hex()})"
    )
