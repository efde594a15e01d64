"""The dashboard's audit pages: the log a page at a time, and one entry verified in the
browser's request (its leaf recomputed, the signed checkpoint, the inclusion proof).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import fastapi
from fastapi import APIRouter
from fastapi.responses import Response

from chargeward.audit import merkle
from chargeward.audit.checkpoint import open_checkpoint, parse_vkey
from chargeward.audit.verify import entry_from_json
from chargeward.errors import TrustError
from chargeward.server.http.web_page import Page, Refused, SignedIn

router = APIRouter(include_in_schema=False)

AUDIT_PAGE = 100


@router.get("/audit")
async def audit_log(
    page: SignedIn, start: int | None = None, target: str = "", transaction_id: str = ""
) -> Response:
    """The audit log, a page of entries at a time (newest page first), filterable."""
    size = (await page.get("/api/v1/audit/tree"))["size"]
    first = max(0, size - AUDIT_PAGE) if start is None else max(0, min(start, size))
    filters = {k: v for k, v in (("target", target), ("transaction_id", transaction_id)) if v}
    entries = await page.get("/api/v1/audit", start=first, limit=AUDIT_PAGE, **filters)
    return page.render(
        "audit.html",
        entries=list(reversed(entries)),
        size=size,
        first=first,
        page_size=AUDIT_PAGE,
        target=target,
        transaction_id=transaction_id,
    )


@router.get("/audit/{index}")
async def audit_entry(
    page: SignedIn, index: Annotated[int, fastapi.Path(ge=0, le=2**63 - 1)]
) -> Response:
    """One entry, verified: its leaf recomputed, the latest signed checkpoint's signature
    under the log's key, and the inclusion proof from the leaf to the signed root."""
    found = await page.get("/api/v1/audit", start=index, limit=1)
    if not found or found[0]["leaf_index"] != index:
        raise Refused(404, f"no audit entry {index}")
    raw = found[0]
    try:
        note = await page.get("/api/v1/audit/checkpoints/latest")
    except Refused as e:
        if e.status != 404:
            raise
        note = None
    vkey = await page.get("/api/v1/audit/vkey")
    checks = await verify_entry(page, raw, note, vkey)
    return page.render("audit_entry.html", e=raw, checks=checks, vkey=vkey.strip())


async def verify_entry(
    page: Page, raw: Mapping[str, Any], note: str | None, vkey: str
) -> list[tuple[str, bool | None, str]]:
    """(check, passed or None when it could not run, what was found) for one entry."""
    entry = entry_from_json(dict(raw))
    leaf = merkle.leaf_hash(entry.leaf(entry.leaf_index))
    same = entry.leaf_hash == leaf
    checks: list[tuple[str, bool | None, str]] = [
        (
            "Entry unchanged since it was appended",
            same,
            f"leaf hash recomputed from the entry: {leaf.hex()}"
            + ("" if same else f"; stored at append time: {raw['leaf_hash']}"),
        )
    ]
    if not note:
        checks.append(("Signed checkpoint", None, "no checkpoint has been signed yet"))
        return checks
    try:
        checkpoint = open_checkpoint(note, parse_vkey(vkey.strip()))
    except TrustError as e:
        checks.append(("Signed checkpoint", False, str(e)))
        return checks
    checks.append(
        (
            "Signed checkpoint",
            True,
            f"tree of {checkpoint.size:,} entries, root {checkpoint.root_hash.hex()}, "
            f"signature verified under {checkpoint.origin}",
        )
    )
    if entry.leaf_index >= checkpoint.size:
        checks.append(
            (
                "Included under the signed root",
                None,
                f"entry {entry.leaf_index} is newer than the latest checkpoint "
                f"({checkpoint.size:,} entries); the next one will cover it",
            )
        )
        return checks
    proof = await page.get(
        "/api/v1/audit/proofs/inclusion", index=entry.leaf_index, size=checkpoint.size
    )
    try:
        merkle.verify_inclusion(
            leaf,
            entry.leaf_index,
            checkpoint.size,
            [bytes.fromhex(h) for h in proof["hashes"]],
            checkpoint.root_hash,
        )
    except (merkle.ProofError, ValueError) as e:
        checks.append(("Included under the signed root", False, str(e)))
    else:
        checks.append(
            (
                "Included under the signed root",
                True,
                f"inclusion proof of {len(proof['hashes'])} hashes leads from the recomputed "
                "leaf to the checkpoint's root",
            )
        )
    return checks
