"""Render an evidence pack (the data of ``evidence.json``) as Markdown, standalone HTML and
the pack's ``VERIFY.md``.  Pure: data in, text out.

    text = markdown(data)
    page = html(data)             # one file, inline CSS, nothing fetched

Every value that came from the server or the bundle is escaped: a station id or a user name
cannot add Markdown structure, and the HTML renderer passes no raw HTML through.
"""

from __future__ import annotations

import html as html_lib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from markdown_it import MarkdownIt

_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\`*_[]<>|~"})
CSS = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #bbb; padding: .3rem .5rem; vertical-align: top; text-align: left; }
th { background: #f0f0f0; }
code, pre { font-family: ui-monospace, monospace; font-size: .85rem; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; }
"""


def esc(value: object) -> str:
    """A value as literal Markdown text, safe inside a table cell."""
    text = "-" if value is None or value == "" else str(value)
    return " ".join(text.split()).translate(_SPECIAL)


def _code(value: object) -> str:
    text = str(value).replace("`", "'")
    return f"`{text}`"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{esc(k)} {v}" for k, v in counts.items() if v) or "-"


PARTY_NAMES = {"pipeline": "Pipeline", "reference-agent": "Reference agent", "platform": "Platform"}


def _part_status(part: dict[str, Any]) -> str:
    if part["party"] == "platform":
        status = "**manufacturer to evidence**"
        return status + (f"<br>{esc(part['simulation'])}" if part["simulation"] else "")
    if part["status"] == "satisfied":
        return "satisfied" + (
            " by the reference agent" if part["party"] == "reference-agent" else ""
        )
    return f"**{esc(part['status'])}**"


def _provenance(report: dict[str, Any]) -> list[str]:
    prov = report["provenance"]
    out = [
        f"The tests ran at Chargeward commit `{prov['commit']}`"
        + {True: " **on a modified tree** (uncommitted changes: the commit does not describe "
           "the code that ran)", False: " (clean tree)", None: " (tree state unknown)"}[
            prov["dirty"]]
        + ".",
        "",
    ]  # fmt: skip
    if not prov["same_commit"]:
        out += [
            f"**Warning: the test report was produced under commit `{prov['commit']}`, not "
            f"under `{prov['expected_commit']}`, the commit this pack is about.** Its results "
            "may not hold for that commit.",
            "",
        ]
    out += _table(
        ["Run", "Python", "Platform", "Chargeward", "Key packages"],
        [
            [str(n), esc(r["python"]), esc(r["platform"]), esc(r["chargeward_version"]),
             esc(", ".join(f"{k} {v}" for k, v in r["packages"].items()))]
            for n, r in enumerate(prov["runs"], start=1)
        ],
    )  # fmt: skip
    return out


def _matrix(tests: dict[str, Any]) -> list[str]:
    report, summary = tests["report"], tests["summary"]
    out = [
        "## Requirements matrix",
        "",
        f"Results read from the JUnit test report `{report['file']}` (SHA-256 "
        f"`{report['sha256']}`, run {esc(report['timestamp'])} on {esc(report['hostname'])}): "
        f"{summary['satisfied']} of {summary['requirements']} requirements satisfied; "
        f"{summary['manufacturer_to_evidence']} need the manufacturer's evidence for their "
        f"platform parts; {summary['failed']} failed; {summary['incomplete']} incomplete.",
        "",
        *_provenance(report),
        "Every requirement names who meets it:",
        "",
        *(f"- **{PARTY_NAMES[k]}**: {esc(v)}." for k, v in tests["parties"].items()),
        "",
        "A pipeline or reference-agent part is satisfied only if every test mapped to it "
        "passed; a test absent from the report is *not run*. A platform part is never "
        "satisfied by these tests: it is an obligation for the manufacturer to evidence, and "
        "any test beside it only demonstrates the behaviour in simulation with the reference "
        "agent. Texts marked *paraphrased* do not quote the legal wording.",
        "",
    ]
    frameworks: dict[str, list[dict[str, Any]]] = {}
    for row in tests["requirements"]:
        frameworks.setdefault(row["framework"], []).append(row)
    for framework, rows in frameworks.items():
        out += [f"### {esc(framework)}", ""]
        body = []
        for row in rows:
            text = esc(row["text"]) + (
                " *(paraphrased)*" if row["wording"] == "paraphrased" else ""
            )
            head = f"**{esc(row['id'])}**: {text}<br>Overall: **{esc(row['status'])}**"
            for n, part in enumerate(row["parts"]):
                claim = "" if len(row["parts"]) == 1 else f": {esc(part['claim'])}"
                cells = "<br>".join(f"{_code(t['node_id'])}: {t['result']}" for t in part["tests"])
                body.append([
                    head if n == 0 else "",
                    f"{PARTY_NAMES[part['party']]}{claim}",
                    cells or "no automated test",
                    _part_status(part),
                ])  # fmt: skip
        out += _table(["Requirement", "Who meets it", "Tests and results", "Status"], body)
    return out


def _release(data: dict[str, Any]) -> list[str]:
    r = data["release"]
    files = r["files"]
    cert = files["signing_certificate"]
    out = ["## Release", ""]
    out += _table(
        ["Field", "Value"],
        [
            ["Version", esc(r["version"])],
            ["Release id (SHA-256 of manifest.json)", _code(r["id"])],
            ["Security version", esc(r["security_version"])],
            ["Class", esc(r.get("release_class"))],
            ["Hardware models", esc(", ".join(r["hardware_models"]))],
            ["Customer", esc(r.get("customer"))],
            ["Uploaded", f"{esc(r['uploaded_at'])} by {esc(r['uploaded_by'])}"],
            ["State", f"{esc(r['state'])} (targets version {esc(r.get('targets_version'))})"],
            ["Signed files from", esc(files["source"])],
            ["Provenance", esc(files.get("provenance", "chargeward"))],  # ADR 0041
        ],
    )
    images = files["manifest"]["images"]
    out += ["Images and their OCPP 2.0.1 signatures (ECDSA P-256 / SHA-256):", ""]
    out += _table(
        ["Component", "SHA-256", "Length", "Signature (base64)"],
        [
            [esc(i["component"]), _code(i["sha256"]), esc(i["length"]), _code(i["signature"])]
            for i in images
        ],
    )
    out += ["Firmware-signing certificate (`release/signing-certificate.pem`):", ""]
    out += _table(["Field", "Value"], [[esc(k), esc(v)] for k, v in cert.items()])
    out += ["Supply-chain documents:", ""]
    out += _table(
        ["Document", "In this pack"],
        [
            [_code(name), _code(doc["file"]) if doc["present"] else esc(doc["note"])]
            for name, doc in files["supply_chain"].items()
        ],
    )
    return out


def _approvals(data: dict[str, Any]) -> list[str]:
    out = ["## Approvals", ""]
    if not data["approvals"]:
        return [*out, "No approval records: the server has no TUF proposal for this release.", ""]
    for p in data["approvals"]:
        out += [
            f"Proposal {p['proposal']} ({esc(p['kind'])}), created {esc(p['created_at'])} by "
            f"{esc(p['created_by'])}: {esc(p['state'])}"
            + (
                f", published {esc(p['published_at'])} as targets version {p['targets_version']}"
                if p["state"] == "published"
                else ""
            ),
            "",
        ]
        out += _table(
            ["Approver (key owner)", "Key id", "Submitted by", "When"],
            [
                [esc(a["approver"]), _code(a["keyid"][:16]), esc(a["submitted_by"]),
                 esc(a["submitted_at"])]
                for a in p["approvals"]
            ],
        )  # fmt: skip
    campaigns = [c for c in data["campaigns"] if c.get("approved_by")]
    for c in campaigns:
        out += [f"Campaign {esc(c['name'])} was approved by {esc(c['approved_by'])}.", ""]
    return out


def _campaigns(data: dict[str, Any]) -> list[str]:
    out = ["## Campaigns", ""]
    if not data["campaigns"]:
        return [*out, "No campaign has shipped this release.", ""]
    out += _table(
        ["Id", "Name", "Status", "Created", "Approved by", "Outcomes"],
        [
            [esc(c["id"]), esc(c["name"]), esc(c["status"]),
             f"{esc(c['created_at'])} by {esc(c['created_by'])}", esc(c.get("approved_by")),
             _counts(c["counts"])]
            for c in data["campaigns"]
        ],
    )  # fmt: skip
    if data["stations"] is None:
        return out
    c = data["campaigns"][0]
    out += ["### Stages", ""]
    out += _table(
        ["Stage", "Stations", "Outcomes"],
        [[esc(s["stage"]), esc(s["size"]), _counts(s["counts"])] for s in c["stages"]],
    )
    transitions = [
        e
        for e in data["audit"]["entries"]
        if e["target"] == f"campaign:{c['id']}" and e["action"] != "campaign.station"
    ]
    out += ["### Transitions (from the audit log)", ""]
    out += _table(
        ["Time", "Actor", "Action", "Details"],
        [
            [esc(e["time"]), esc(e["actor"]), esc(e["action"]),
             _code(json.dumps(e["details"], sort_keys=True))]
            for e in transitions
        ],
    )  # fmt: skip
    out += ["### Stations", ""]
    out += _table(
        ["Station", "Stage", "Final state", "Attempts", "Started", "Finished", "Timeline"],
        [
            [esc(s["station_id"]), esc(s["stage"]), esc(s["state"]), esc(s["attempts"]),
             esc(s["started_at"]), esc(s["finished_at"]),
             "<br>".join(" ".join(esc(part) for part in step) for step in s["timeline"])]
            for s in data["stations"]
        ],
    )  # fmt: skip
    out += ["Campaign definition:", "", "```json", json.dumps(c["spec"], indent=2), "```", ""]
    return out


def _audit(data: dict[str, Any]) -> list[str]:
    a = data["audit"]
    cp = a["checkpoint"]
    out = ["## Audit log", ""]
    if cp is None:
        out += ["**No signed checkpoint yet**: the entries below carry no inclusion proof.", ""]
    else:
        out += [
            f"{a['proven']} entries are proven in `audit/proofs.jsonl` against the checkpoint "
            f"signed at tree size {cp['size']} (root `{cp['root_hash']}`), verifier key "
            f"`{a['vkey']}`. See `VERIFY.md`.",
            "",
        ]
    if a["unproven"]:
        out += [
            f"{a['unproven']} entries were appended after that checkpoint and carry no proof "
            "yet; export again after the server signs its next checkpoint.",
            "",
        ]
    out += _table(
        ["Leaf", "Time", "Actor", "Action", "Target", "Proven"],
        [
            [esc(e["leaf_index"]), esc(e["time"]), esc(e["actor"]), esc(e["action"]),
             esc(e["target"]), "yes" if e["proven"] else "no"]
            for e in a["entries"]
        ],
    )  # fmt: skip
    return out


def title(data: dict[str, Any]) -> str:
    s = data["subject"]
    if s["campaign"] is not None:
        return f"Evidence pack: campaign {s['campaign']['name']} of release {s['version']}"
    return f"Evidence pack: release {s['version']}"


def markdown(data: dict[str, Any]) -> str:
    s = data["subject"]
    head = [
        f"# {esc(title(data))}",
        "",
        f"Release id `{s['release_id']}`. Generated {esc(data['generated_at'])} by "
        f"{esc(data['generator'])} from {esc(data['server'])}. Every file of the pack is "
        "listed in `SHA256SUMS`; `evidence.json` holds the same facts for machines.",
        "",
    ]
    sig = data.get("signature")
    if sig is not None:
        head += [
            f"Signed in `{sig['file']}` (DSSE) by the key with SHA-256 fingerprint "
            f"`{sig['keyid']}`; `chargeward evidence verify` checks it (see `VERIFY.md`).",
            "",
        ]
    parts = [head, _matrix(data["tests"]), _release(data), _approvals(data)]
    parts += [_campaigns(data), _audit(data)]
    return "\n".join(line for part in parts for line in part)


def html(data: dict[str, Any]) -> str:
    """A standalone page: the Markdown rendered, inline CSS, no external resources."""
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = renderer.render(markdown(data)).replace("&lt;br&gt;", "<br>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html_lib.escape(title(data))}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def verify_text(data: dict[str, Any]) -> str:
    """The pack's VERIFY.md: how to check it offline."""
    a = data["audit"]
    sig = data.get("signature")
    lines = [
        "# Verifying this evidence pack offline",
        "",
    ]
    if sig is not None:
        lines += [
            f"0. Check who produced the pack and that no file changed since: `{sig['file']}` is",
            "   a DSSE envelope signing the SHA-256 of every other file. Obtain the producer's",
            f"   public key out of band (its SHA-256 fingerprint is `{sig['keyid']}`) and run",
            "",
            "       chargeward evidence verify . --key producer.pub.pem",
            "",
            "   It also checks that the requirements matrix is what `tests/` gives and names",
            "   the commit the tests ran under; any mismatch exits with status 3 and one line.",
            "",
        ]
    lines += [
        "1. Check that no file changed: `sha256sum -c SHA256SUMS` (run in this directory).",
        "",
        "2. Pin the audit log's verifier key. `audit/checkpoint.vkey` holds the key the server",
        "   named; compare it with the key the operator published or gave you out of band:",
        "",
        f"       {a['vkey']}",
        "",
    ]
    if a["checkpoint"] is None:
        lines += ["3. The log had no signed checkpoint when this pack was made: no proofs.", ""]
    else:
        lines += [
            "3. Check every audit entry's inclusion proof against the signed checkpoint",
            "   (the entry's leaf is recomputed from its content, the proof must lead to the",
            "   checkpoint's root, and the checkpoint's signature must verify under the key):",
            "",
            '       chargeward audit verify audit/proofs.jsonl --vkey "$(cat pinned.vkey)"',
            "",
            "   It prints `verified N entries` or exits with status 3 naming the first entry",
            "   that does not verify. `audit/checkpoint.note` is the checkpoint itself; keep it",
            "   to check later exports of the log against it (`chargeward audit verify",
            "   log.jsonl --checkpoint audit/checkpoint.note`).",
            "",
        ]
    lines += [
        "4. Check the release's signature and certificate chain with the bundle and the",
        "   Manufacturer Root CA certificate: `chargeward release verify BUNDLE.cwb --root",
        "   root.pem`; its manifest must equal `release/manifest.json` byte for byte.",
        "",
        "5. The requirements matrix is computed from `tests/` (the JUnit report of the test",
        "   run, whose properties name the commit and environment it ran under) and the",
        "   mapping shipped with Chargeward; `evidence.json` lists every test and who meets",
        "   each requirement. Platform parts are the manufacturer's to evidence.",
        "",
    ]
    return "\n".join(lines)
