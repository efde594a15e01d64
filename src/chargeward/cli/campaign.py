"""``chargeward campaign``: staged rollouts through the running server's REST API::

    $ chargeward campaign create rollout.toml          # or .json; prints the stage sizes
    $ chargeward campaign list
    $ chargeward campaign show ac22-1.2.0
    $ chargeward campaign watch ac22-1.2.0             # live progress until it ends
    $ chargeward campaign stations ac22-1.2.0 --state failed   # and why waiting ones wait
    $ chargeward campaign approve|pause|resume|abort|retry ac22-1.2.0
    $ chargeward campaign rollback ac22-1.2.0 [--release <previous release id>]

A campaign file (TOML)::

    name = "ac22-1.2.0"
    release = "<release id>"
    soak = "30m"
    stage_deadline = "3d"          # a stage not through by then raises an alert...
    on_stage_deadline = "alert"    # ...or "pause"s the campaign too
    [target]
    models = ["AC22"]
    version = ">=1.0,<1.2"
    [stages]
    canary = 5
    then = ["25%", "100%"]
    [gates]
    success = "95%"
    error = "10%"
    min_finished = 5
    [concurrency]
    global = 200
    per_site = 2
    keep_available = 1
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console
from chargeward.errors import BundleError

app = typer.Typer(no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SHOWN = (
    "pending", "waiting", "deferred", "dispatched", "downloading", "installing", "rebooting",
    "soaking", "succeeded", "failed", "rolled_back", "timed_out", "canceled",
)  # fmt: skip
ENDED = ("completed", "aborted")


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="campaign", help="Staged rollouts: create, watch, pause, roll back.")


def read_document(path: Path) -> dict[str, Any]:
    """A campaign file: TOML (``.toml``) or JSON."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror}") from e
    try:
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from e
    if not isinstance(doc, dict):
        raise BundleError(f"{path}: a campaign is a table of settings")
    return doc


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v) or "-"


def summary(c: dict[str, Any]) -> Table:
    t = Table(title=f"campaign {c['name']} (#{c['id']}): {c['version']} ({c['release_class']})")
    t.add_column("stage", justify="right")
    t.add_column("stations", justify="right")
    t.add_column("states")
    for st in c["stages"]:
        mark = "▶ " if st["stage"] == c["stage"] and c["status"] == "running" else ""
        t.add_row(f"{mark}{st['stage']}", str(st["size"]), _counts(st["counts"]))
    return t


def status_line(c: dict[str, Any]) -> Text:
    line = f"status {c['status']}"
    if c["pause_reason"]:
        line += f" ({c['pause_reason']})"
    line += f"; deferred while charging {c['deferred_charging']}"
    if c["mean_time_to_update_s"] is not None:
        line += f"; mean time to update {c['mean_time_to_update_s']:.0f} s"
    waiting = c.get("waiting") or {}
    if waiting:
        line += "; waiting: " + ", ".join(f"{code} {n}" for code, n in waiting.items())
    return Text(line)


def waiting_text(r: dict[str, Any]) -> str:
    """A station's wait reason as one line: ``offline: offline since ...``."""
    why = r.get("waiting_reason")
    return f"{why['code']}: {why['text']}" if why else "-"


@app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="Campaign file, TOML or JSON.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    json_out: Json = False,
    allow_below_floor: Annotated[
        bool,
        typer.Option(
            "--allow-below-floor",
            help="Leave out (audited) the stations whose rollback floor is above the release, "
            "instead of refusing the campaign.",
        ),
    ] = False,
    allow_unreachable_sites: Annotated[
        bool,
        typer.Option(
            "--allow-unreachable-sites",
            help="Keep (audited) the stations of sites where keep_available leaves no charger "
            "to update, waiting with reason site_floor, instead of refusing the campaign.",
        ),
    ] = False,
) -> None:
    """Create a campaign (it starts at once, or awaits a second person's approval).

    The server refuses an unpublished release (with a TUF repository), one below the
    rollback floor of some target stations, unless ``--allow-below-floor``, and a target site
    where ``keep_available`` leaves no charger to update, unless ``--allow-unreachable-sites``."""
    document = read_document(file)
    if allow_below_floor:
        document["allow_below_floor"] = True
    if allow_unreachable_sites:
        document["allow_unreachable_sites"] = True
    c = ApiClient(data_dir, server).request("POST", "/api/v1/campaigns", json=document)
    if json_out:
        console.print_json(data=c)
        return
    sizes = [st["size"] for st in c["stages"]]
    console.print(Text(f"created campaign {c['name']} (#{c['id']}): {c['status']}"))
    console.print(Text(f"stations per stage: {' → '.join(str(n) for n in sizes)}"))
    if c["status"] == "awaiting_approval":
        console.print(Text("it targets many stations: another person must run `campaign approve`"))
    for warning in c.get("warnings") or ():
        console.print(Text(f"warning: {warning}"), soft_wrap=True)


@app.command("list")
def list_(data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """List campaigns."""
    rows = ApiClient(data_dir, server).request("GET", "/api/v1/campaigns")
    t = Table("id", "name", "version", "status", "stage", "succeeded", "failed", "stations")
    for c in rows:
        n = sum(c["counts"].values())
        bad = c["counts"]["failed"] + c["counts"]["rolled_back"] + c["counts"]["timed_out"]
        t.add_row(
            str(c["id"]), c["name"], c["version"], c["status"], str(c["stage"]),
            str(c["counts"]["succeeded"]), str(bad), str(n),
        )  # fmt: skip
    console.print(t)


@app.command("show")
def show(
    ref: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None, json_out: Json = False
) -> None:
    """A campaign's stages and counts."""
    c = ApiClient(data_dir, server).request("GET", f"/api/v1/campaigns/{ref}")
    if json_out:
        console.print_json(data=c)
        return
    console.print(summary(c))
    console.print(status_line(c))


@app.command("downloads")
def downloads(
    ref: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None, json_out: Json = False
) -> None:
    """Bytes the server sent for a campaign, per station, and the site caches it used."""
    d = ApiClient(data_dir, server).request("GET", f"/api/v1/campaigns/{ref}/downloads")
    if json_out:
        console.print_json(data=d)
        return
    t = Table("station", "bytes sent", "requests", title=f"campaign {d['campaign_id']} downloads")
    for r in d["stations"]:
        t.add_row(r["station_id"], f"{r['bytes_sent']:,}", str(r["requests"]))
    console.print(t)
    n = len(d["stations"])
    console.print(f"server sent {d['bytes_sent']:,} bytes to {n} station{'' if n == 1 else 's'}")
    for c in d["local_caches"]:
        why = f": {c['reason']}" if c["reason"] else ""
        console.print(
            f"site {c['site_id']}: Local Controller {c['station_id']} {c['status']}{why}",
            soft_wrap=True,
        )


@app.command("stations")
def stations(
    ref: str,
    state: Annotated[str | None, typer.Option(help="Only stations in this state.")] = None,
    timeline: Annotated[bool, typer.Option(help="Each station's timeline too.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Per-station state in a campaign, and why each waiting station waits."""
    params = {"state": state} if state else {}
    rows = ApiClient(data_dir, server).request(
        "GET", f"/api/v1/campaigns/{ref}/stations", params=params
    )
    t = Table("station", "stage", "state", "attempts", "last status", "reason", "waiting for")
    for r in rows:
        t.add_row(
            r["station_id"], str(r["stage"]), r["state"], str(r["attempts"]),
            r["last_status"] or "-", r["reason"] or "-", waiting_text(r),
        )  # fmt: skip
    console.print(t)
    if timeline:
        for r in rows:
            console.print(Text(f"{r['station_id']}:"))
            for at, st, note in r["timeline"]:
                console.print(Text(f"  {at}  {st:<12} {note}"))


@app.command("watch")
def watch(
    ref: str,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option(help="Draw once and exit.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Live progress until the campaign completes or is aborted (Ctrl-C leaves it running)."""
    api = ApiClient(data_dir, server)

    def frame(c: dict[str, Any]) -> Group:
        total = max(sum(c["counts"].values()), 1)
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        done = sum(
            c["counts"][k] for k in ("succeeded", "failed", "rolled_back", "timed_out", "canceled")
        )
        bar.add_task("finished", total=total, completed=done)
        bar.add_task("succeeded", total=total, completed=c["counts"]["succeeded"])
        return Group(summary(c), bar, status_line(c))

    c = api.request("GET", f"/api/v1/campaigns/{ref}")
    if once:
        console.print(frame(c))
        return
    try:
        with Live(frame(c), console=console, refresh_per_second=4) as live:
            while c["status"] not in ENDED:
                time.sleep(interval)
                c = api.request("GET", f"/api/v1/campaigns/{ref}")
                live.update(frame(c))
    except KeyboardInterrupt:
        console.print(Text("stopped watching; the campaign goes on"))
        return
    console.print(Text(f"campaign {c['name']} {c['status']}: {_counts(c['counts'])}"))


def _action(name: str, verb: str, doc: str) -> None:
    def command(ref: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
        c = ApiClient(data_dir, server).request("POST", f"/api/v1/campaigns/{ref}/{name}")
        console.print(Text(f"campaign {c['name']} {verb}: now {c['status']}"))

    command.__doc__ = doc
    app.command(name)(command)


for _name, _verb, _doc in (
    ("approve", "approved", "Start a campaign awaiting approval (not as its creator)."),
    ("pause", "paused", "Pause a campaign: nothing new is dispatched."),
    ("resume", "resumed", "Resume a paused campaign; errors so far are acknowledged."),
    ("abort", "aborted", "Abort: cancel every station not yet installing."),
    ("retry", "retried", "Retry the failed, rolled-back, timed-out and skipped stations."),
):
    _action(_name, _verb, _doc)


@app.command("rollback")
def rollback(
    ref: str,
    release: Annotated[
        str | None,
        typer.Option(
            help="The release to put back (its id); default: the newest one the stations "
            "accept (at or above their rollback floor)."
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Install an earlier release on every station that took this campaign's release."""
    c = ApiClient(data_dir, server).request(
        "POST", f"/api/v1/campaigns/{ref}/rollback", json={"release": release}
    )
    console.print(Text(f"created rollback campaign {c['name']} (#{c['id']}): {c['status']}"))
