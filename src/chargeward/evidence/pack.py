"""Collect an evidence pack through the server's REST API and write it, all or nothing.

    api = ApiClient(data_dir)
    inputs = Inputs("release", "1.2.0", report=Path("reports/pytest.xml").read_bytes(),
                    commit=head)
    evidence = collect(api, inputs, files=read_bundle(bundle))
    write_pack(evidence, Path("evidence-1.2.0"), signer, zip_too=True)

The pack is built in a temporary directory beside the destination and renamed into place
only when complete; on any error nothing is left behind.  Every audit entry concerning the
release or campaign comes with an RFC 6962 inclusion proof against the latest signed
checkpoint, and the proofs are verified (:mod:`chargeward.audit.proofs`) before anything is
written.

The test report must name the commit and environment it ran under
(:mod:`~chargeward.evidence.testrun`): a report without them, or from another commit than
``Inputs.commit``, is refused unless ``allow_other_commit``, and then the pack says so.  The
pack is signed (``evidence.dsse.json``, :mod:`~chargeward.evidence.signing`): a DSSE envelope
over every other file's SHA-256, which ``chargeward evidence verify`` checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from chargeward import __version__
from chargeward.audit.checkpoint import open_checkpoint, parse_vkey
from chargeward.audit.proofs import format_proofs, parse_proofs, verify_proofs
from chargeward.crypto.keys import Signer, public_key_fingerprint
from chargeward.crypto.pki import describe_certificate, load_certificate
from chargeward.errors import BundleError, ConfigError, Conflict, InvalidValue, NotFound
from chargeward.evidence import attacks, matrix, render, signing, testrun
from chargeward.evidence.bundle import SUPPLY_MEMBERS, ReleaseFiles
from chargeward.limits import DEFAULT_FORMAT_LIMITS

FORMAT = "chargeward-evidence/1"
AUDIT_PAGE = 1000
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same pack zips to the same bytes


class Api(Protocol):
    """What the pack needs of :class:`chargeward.cli.apiclient.ApiClient`."""

    base: str

    def request(self, method: str, path: str, **kw: Any) -> Any: ...

    def text(self, method: str, path: str, **kw: Any) -> str: ...


class Progress(Protocol):
    def stage(self, what: str, total: int | None = None) -> None: ...

    def advance(self) -> None: ...


class _Quiet:
    def stage(self, what: str, total: int | None = None) -> None:
        pass

    def advance(self) -> None:
        pass


@dataclass(frozen=True)
class Inputs:
    kind: str  # release | campaign
    ref: str  # release version, id or id prefix; campaign id or name
    report: bytes  # the JUnit XML test report
    report_name: str = "pytest.xml"
    commit: str = ""  # the Chargeward commit the pack is about; the report must name it
    allow_other_commit: bool = False  # build from another commit's report, and say so


@dataclass
class Evidence:
    """Everything the pack holds: ``data`` becomes evidence.json, ``files`` the rest."""

    data: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


def requirements() -> list[matrix.Requirement]:
    """The mapping shipped with the package (``requirements.toml``)."""
    raw = resources.files("chargeward.evidence").joinpath("requirements.toml").read_bytes()
    return matrix.parse_requirements(raw)


def attack_catalogue() -> attacks.Catalogue:
    """The attack catalogue shipped with the package (``attacks.toml``)."""
    raw = resources.files("chargeward.evidence").joinpath("attacks.toml").read_bytes()
    return attacks.parse_catalogue(raw)


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def find_release(api: Api, ref: str) -> dict[str, Any]:
    """The release named by id, id prefix or version; one, or a clear error."""
    releases = api.request("GET", "/api/v1/releases")
    found = [r for r in releases if ref in (r["id"], r["version"])]
    if not found and len(ref) >= 8:
        found = [r for r in releases if r["id"].startswith(ref)]
    if not found:
        raise NotFound(f"no release {ref!r} on the server")
    if len(found) > 1:
        ids = ", ".join(r["id"][:12] for r in found)
        raise Conflict(f"{ref!r} names {len(found)} releases ({ids}); give the release id")
    return dict(found[0])


def _server_files(api: Api, release_id: str) -> ReleaseFiles:
    got = api.request("GET", f"/api/v1/releases/{release_id}/files")
    return ReleaseFiles(got["manifest"].encode(), got["signing_certificate"].encode(), "server")


def _with_server_documents(api: Api, release: dict[str, Any], files: ReleaseFiles) -> ReleaseFiles:
    """Add the supply-chain documents the server keeps (the provenance is never inside the
    bundle: it names the bundle) that the files in hand lack."""
    supply = dict(files.supply)
    for name in release.get("documents", {}):
        if name in SUPPLY_MEMBERS and name not in supply:
            path = f"/api/v1/releases/{release['id']}/documents/{name}"
            supply[name] = api.text("GET", path).encode("utf-8")  # JSON documents, UTF-8
    return dataclasses.replace(files, supply=supply)


def _audit_entries(api: Api, targets: list[str], progress: Progress) -> list[dict[str, Any]]:
    """Every entry whose target is one of ``targets``, in log order."""
    by_index: dict[int, dict[str, Any]] = {}
    for target in targets:
        start = 0
        while True:
            page = api.request(
                "GET",
                "/api/v1/audit",
                params={"target": target, "start": start, "limit": AUDIT_PAGE},
            )
            for entry in page:
                by_index[entry["leaf_index"]] = entry
                progress.advance()
            if len(page) < AUDIT_PAGE:
                break
            start = page[-1]["leaf_index"] + 1
    return [by_index[i] for i in sorted(by_index)]


def _audit(api: Api, targets: list[str], progress: Progress) -> tuple[dict[str, Any], bytes]:
    """The audit section of evidence.json and the proofs file (verified here first)."""
    progress.stage("reading audit entries")
    entries = _audit_entries(api, targets, progress)
    vkey = api.text("GET", "/api/v1/audit/vkey").strip()
    try:
        note = api.text("GET", "/api/v1/audit/checkpoints/latest")
    except NotFound:
        note = None
    key = parse_vkey(vkey)
    checkpoint = open_checkpoint(note, key) if note is not None else None
    size = checkpoint.size if checkpoint else 0
    covered = [e for e in entries if e["leaf_index"] < size]
    progress.stage("fetching inclusion proofs", total=len(covered))
    proven = []
    for entry in covered:
        proof = api.request(
            "GET",
            "/api/v1/audit/proofs/inclusion",
            params={"index": entry["leaf_index"], "size": size},
        )
        proven.append((entry, proof))
        progress.advance()
    proofs = format_proofs(vkey, note or "", proven).encode() if note else b""
    if note:  # what the pack's reader will check: refuse to write anything that fails it
        verify_proofs(parse_proofs(proofs.decode().splitlines()), key)
    proven_at = {e["leaf_index"] for e in covered}
    section = {
        "vkey": vkey,
        "checkpoint": None
        if checkpoint is None
        else {"size": checkpoint.size, "root_hash": checkpoint.root_hash.hex(), "note": note},
        "targets": targets,
        "entries": [{**e, "proven": e["leaf_index"] in proven_at} for e in entries],
        "proven": len(covered),
        "unproven": len(entries) - len(covered),
    }
    return section, proofs


def _certificate(pem: bytes) -> dict[str, Any]:
    info = describe_certificate(load_certificate(pem))
    return {
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "sha256_fingerprint": info.fingerprint,
    }


def _release_section(
    files: ReleaseFiles, provenance: str = "chargeward"
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``provenance``: ``chargeward`` (a CWFW bundle) or ``vendor-supplied`` (a vendor's image,
    signature and certificate as shipped, ADR 0041: the manifest is the server's description)."""
    vendor = provenance == "vendor-supplied"
    out = {
        "release/manifest.json": files.manifest,
        "release/signing-certificate.pem": files.certificate,
    }
    supply: dict[str, Any] = {}
    for name in SUPPLY_MEMBERS:
        if name in files.supply:
            out[f"release/{name}"] = files.supply[name]
            digest = hashlib.sha256(files.supply[name]).hexdigest()
            supply[name] = {"present": True, "file": f"release/{name}", "sha256": digest}
        else:
            note = "not supplied by the vendor" if vendor else "not present in this bundle"
            supply[name] = {"present": False, "note": note}
    section = {
        "provenance": provenance,
        "source": files.source,
        "manifest": json.loads(files.manifest),
        "signing_certificate": _certificate(files.certificate),
        "supply_chain": supply,
    }
    return section, out


PARTIES = {
    matrix.PIPELINE: "Chargeward's server and CLI",
    matrix.REFERENCE_AGENT: (
        "Chargeward's reference charger agent: met for chargers that run it; for any other "
        "charger an obligation on its manufacturer"
    ),
    matrix.PLATFORM: (
        "the charger platform and its manufacturer (hardware root of trust, bootloader, "
        "physical design, the charger's other software, the manufacturer's policies): for the "
        "manufacturer to evidence, never satisfied by these tests"
    ),
}


def _part(p: matrix.PartRow) -> dict[str, Any]:
    return {
        "party": p.part.party,
        "claim": p.part.claim,
        "status": p.status,
        "simulation": p.simulation,
        "tests": [
            {"node_id": t.node_id, "result": t.result, "cases": dict(t.cases)} for t in p.tests
        ],
    }


def _tests(inputs: Inputs) -> dict[str, Any]:
    report, report_name = inputs.report, inputs.report_name
    parsed = matrix.parse_junit(report)
    run = testrun.check_report(
        parsed, expected_commit=inputs.commit, allow_other_commit=inputs.allow_other_commit
    )
    rows = matrix.build_matrix(requirements(), parsed)
    statuses = [r.status for r in rows]
    return {
        "report": {
            "file": f"tests/{report_name}",
            "sha256": hashlib.sha256(report).hexdigest(),
            "timestamp": parsed.timestamp,
            "hostname": parsed.hostname,
            "totals": dict(parsed.totals),
            "provenance": run.to_dict(),
        },
        "parties": PARTIES,
        "requirements": [
            {
                "id": r.requirement.id,
                "framework": r.requirement.framework,
                "text": r.requirement.text,
                "wording": r.requirement.wording,
                "status": r.status,
                "satisfied": r.satisfied,
                "parts": [_part(p) for p in r.parts],
            }
            for r in rows
        ],
        "summary": {
            "requirements": len(rows),
            "satisfied": sum(r.satisfied for r in rows),
            "manufacturer_to_evidence": statuses.count(matrix.MANUFACTURER),
            "failed": statuses.count(matrix.FAILED),
            "incomplete": statuses.count(matrix.INCOMPLETE) + statuses.count(matrix.NO_TESTS),
        },
    }


def check_inputs(inputs: Inputs) -> dict[str, Any]:
    """Parse what needs no server (the test report, its provenance and the mapping) before
    asking it."""
    return _tests(inputs)


def collect(
    api: Api,
    inputs: Inputs,
    *,
    files: ReleaseFiles | None = None,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> Evidence:
    """Gather the pack for ``inputs``; ``files`` from ``--bundle``, else from the server."""
    progress = progress or _Quiet()
    tests = check_inputs(inputs)
    progress.stage(f"reading {inputs.kind} {inputs.ref}")
    campaign: dict[str, Any] | None = None
    stations: list[Any] | None = None
    if inputs.kind == "campaign":
        campaign = api.request("GET", f"/api/v1/campaigns/{inputs.ref}")
        release = api.request("GET", f"/api/v1/releases/{campaign['release_id']}")
        stations = api.request("GET", f"/api/v1/campaigns/{campaign['id']}/stations")
        campaigns = [campaign]
    elif inputs.kind == "release":
        release = find_release(api, inputs.ref)
        campaigns = [
            c for c in api.request("GET", "/api/v1/campaigns") if c["release_id"] == release["id"]
        ]
    else:
        raise InvalidValue(f"no evidence pack for a {inputs.kind!r}")
    if files is not None and files.release_id != release["id"]:
        raise BundleError(
            f"the bundle ({files.source}) is release {files.release_id[:12]}, not the "
            f"exported release {release['id'][:12]} ({release['version']})"
        )
    files = _with_server_documents(api, release, files or _server_files(api, release["id"]))
    approvals = api.request("GET", f"/api/v1/releases/{release['id']}/approvals")
    targets = [release["id"], *(f"campaign:{c['id']}" for c in campaigns)]
    audit, proofs = _audit(api, targets, progress)
    release_section, out = _release_section(files, release.get("provenance", "chargeward"))
    out["release/approvals.json"] = _json(approvals)
    out[f"tests/{inputs.report_name}"] = inputs.report
    if proofs:
        out["audit/proofs.jsonl"] = proofs
        out["audit/checkpoint.note"] = audit["checkpoint"]["note"].encode()
    out["audit/checkpoint.vkey"] = (audit["vkey"] + "\n").encode()
    data = {
        "format": FORMAT,
        "generator": f"chargeward {__version__}",
        "generated_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
        "server": api.base,
        "subject": {
            "kind": inputs.kind,
            "release_id": release["id"],
            "version": release["version"],
            "campaign": None
            if campaign is None
            else {"id": campaign["id"], "name": campaign["name"]},
        },
        "release": {**release, "files": release_section},
        "approvals": approvals,
        "campaigns": campaigns,
        "stations": stations,
        "audit": audit,
        "tests": tests,
    }
    return Evidence(data, out)


def _sums(files: dict[str, bytes]) -> bytes:
    return "".join(
        f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files)
    ).encode()


def pack_files(evidence: Evidence, signer: Signer) -> dict[str, bytes]:
    """Every file of the pack by relative path: SHA256SUMS covering all the others, then
    ``evidence.dsse.json`` signing every file with ``signer`` (the key named in the pack)."""
    keyid = public_key_fingerprint(signer.public_key())
    data = {**evidence.data, "signature": {"file": signing.ENVELOPE, "keyid": keyid}}
    files = dict(evidence.files)
    files["evidence.json"] = _json(data)
    files["evidence.md"] = render.markdown(data).encode()
    files["evidence.html"] = render.html(data).encode()
    files["VERIFY.md"] = render.verify_text(data).encode()
    files["SHA256SUMS"] = _sums(files)
    files[signing.ENVELOPE] = signing.sign_pack(files, data, signer)
    return files


def _write_zip(files: dict[str, bytes], dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{dest.stem}/{name}", date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])


def write_pack(
    evidence: Evidence, out: Path, signer: Signer, *, zip_too: bool = False
) -> list[Path]:
    """Write the pack to the new directory ``out`` (and ``out.zip``); returns what was made.

    Refuses an existing destination (:class:`Conflict`).  Built beside ``out`` under a
    temporary name and renamed into place; on error nothing is left.
    """
    zip_path = out.with_name(out.name + ".zip")
    for dest in (out, zip_path) if zip_too else (out,):
        if dest.exists():
            raise Conflict(f"{dest} exists; choose another output or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    files = pack_files(evidence, signer)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tree = work / out.name
        for name, data in files.items():
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if zip_too:
            _write_zip(files, work / zip_path.name)
        for path in work.rglob("*"):
            if path.is_file():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
        os.rename(tree, out)
        made = [out]
        if zip_too:
            os.rename(work / zip_path.name, zip_path)
            made.append(zip_path)
        return made
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _add(files: dict[str, bytes], name: str, data: bytes, total: int) -> int:
    most_files = DEFAULT_FORMAT_LIMITS.evidence_pack_files
    most_bytes = DEFAULT_FORMAT_LIMITS.evidence_pack_bytes
    if len(files) >= most_files or total + len(data) > most_bytes:
        raise ConfigError(f"the pack is over {most_files} files or {most_bytes} bytes")
    files[name] = data
    return total + len(data)


def read_pack(path: Path) -> dict[str, bytes]:
    """The files of the pack at ``path`` (its directory, or the zip ``write_pack`` made), by
    relative path; :class:`ConfigError` for anything that is not a readable pack."""
    files: dict[str, bytes] = {}
    total = 0
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            if item.is_symlink():
                raise ConfigError(f"{item}: the pack holds a symbolic link")
            if item.is_file():
                total = _add(files, item.relative_to(path).as_posix(), item.read_bytes(), total)
        return files
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            most_bytes = DEFAULT_FORMAT_LIMITS.evidence_pack_bytes
            if sum(i.file_size for i in infos) > most_bytes:
                raise ConfigError(f"{path}: the pack is over {most_bytes} bytes unpacked")
            tops = set()
            for info in infos:
                top, _, name = info.filename.partition("/")
                parts = name.split("/")
                tops.add(top)
                bad = not top or not name or "" in parts or ".." in parts or "\\" in name
                if bad or name in files or len(tops) > 1:
                    raise ConfigError(f"{path}: member {info.filename!r} is not a pack file")
                total = _add(files, name, zf.read(info), total)
    except FileNotFoundError as e:
        raise NotFound(f"no evidence pack at {path}") from e
    except (zipfile.BadZipFile, OSError) as e:
        raise ConfigError(f"{path} is neither a pack directory nor a pack zip: {e}") from e
    return files
