"""REST API for vendors' own signed firmware (ADR 0041).

    POST   /api/v1/vendor-roots?model=M                body: the vendor root (PEM)
    GET    /api/v1/vendor-roots[?model=M]
    DELETE /api/v1/vendor-roots/{model}/{fingerprint}
    POST   /api/v1/vendor-releases                      multipart/form-data, below

A vendor release is a ``multipart/form-data`` body with ``image`` (the file as the vendor
shipped it), ``signature`` (its OCPP signature, base64), ``signing_certificate`` (PEM) — both
exactly as shipped —, ``model`` (repeatable), ``version``, optional ``security_version``,
``component`` and ``sbom`` (a CycloneDX file).  A signature that does not verify under the
roots registered for every model, a certificate that does not chain to one of them or is not
valid now, or a model without a registered root is refused with 422 (``untrusted``) and the
reason; the same image twice with 409.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel

from chargeward.crypto.signature import Digest, sha256_file
from chargeward.crypto.vendor import vendor_root
from chargeward.errors import BundleError
from chargeward.limits import DEFAULT_FORMAT_LIMITS, KIB
from chargeward.release.manifest import SBOM_NAME
from chargeward.server.common.schemas import ReleaseView
from chargeward.server.http.api import Operator
from chargeward.server.rollout import vendor_releases
from chargeward.server.rollout.vendor_releases import VendorImage, VendorRootView
from chargeward.server.state import ServerState

router = APIRouter(tags=["vendor firmware"])
MAX_ROOT_PEM = 16 * KIB


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


class VendorRootOut(BaseModel):
    model: str
    fingerprint: str
    subject: str
    not_after: str
    added_by: str
    added_at: str
    certificate_pem: str


def _out(view: VendorRootView) -> VendorRootOut:
    return VendorRootOut(
        model=view.model,
        fingerprint=view.fingerprint,
        subject=view.subject,
        not_after=view.not_after.isoformat(),
        added_by=view.added_by,
        added_at=view.added_at.isoformat(),
        certificate_pem=view.certificate_pem,
    )


@router.post(
    "/api/v1/vendor-roots",
    response_model=VendorRootOut,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string"}}},  # a PEM certificate
        }
    },
)
async def add_vendor_root(
    request: Request, who: Operator, model: Annotated[str, Query(max_length=20)]
) -> VendorRootOut:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_ROOT_PEM:
            raise BundleError(f"vendor root is larger than {MAX_ROOT_PEM} bytes")
    state = _state(request)
    root = vendor_root(bytes(body), now=state.clock())
    async with state.db.session() as s:
        view = await vendor_releases.add_root(s, model, root, actor=who, now=state.clock())
    return _out(view)


@router.get("/api/v1/vendor-roots", response_model=list[VendorRootOut])
async def list_vendor_roots(
    request: Request, _: Operator, model: Annotated[str | None, Query(max_length=20)] = None
) -> list[VendorRootOut]:
    async with _state(request).db.snapshot() as s:
        return [_out(v) for v in await vendor_releases.list_roots(s, model)]


@router.delete("/api/v1/vendor-roots/{model}/{fingerprint}", status_code=204)
async def remove_vendor_root(model: str, fingerprint: str, request: Request, who: Operator) -> None:
    state = _state(request)
    async with state.db.session() as s:
        await vendor_releases.remove_root(s, model, fingerprint, actor=who, now=state.clock())


async def _spool(upload: UploadFile, dest: Path, cap: int, what: str) -> None:
    size = 0
    with dest.open("wb") as fh:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > cap:
                raise BundleError(f"{what} larger than {cap} bytes")
            fh.write(chunk)
    if size == 0:
        raise BundleError(f"empty {what}")


@router.post("/api/v1/vendor-releases", response_model=ReleaseView, status_code=201)
async def upload_vendor_release(
    request: Request,
    who: Operator,
    image: Annotated[UploadFile, File(description="the image, as the vendor shipped it")],
    signature: Annotated[str, Form(max_length=800, description="OCPP signature, base64")],
    signing_certificate: Annotated[str, Form(max_length=5500, description="PEM, as shipped")],
    model: Annotated[list[str], Form(max_length=16)],
    version: Annotated[str, Form(max_length=50)],
    security_version: Annotated[int, Form(ge=0)] = 0,
    component: Annotated[str, Form(max_length=32)] = "main",
    sbom: Annotated[UploadFile | None, File(description="CycloneDX SBOM (optional)")] = None,
) -> ReleaseView:
    state = _state(request)
    work = Path(tempfile.mkdtemp(prefix="vendor-", dir=state.data_dir / "tmp"))
    try:
        file = work / "image.bin"
        await _spool(image, file, state.limits.bundle_bytes, "image")
        digest: Digest = await asyncio.to_thread(sha256_file, file)
        documents: dict[str, bytes] = {}
        if sbom is not None:
            sbom_file = work / SBOM_NAME
            await _spool(sbom, sbom_file, DEFAULT_FORMAT_LIMITS.attestation_bytes, "SBOM")
            documents[SBOM_NAME] = sbom_file.read_bytes()
        upload = VendorImage(
            file=file,
            digest=digest,
            signature=signature,
            signing_certificate_pem=signing_certificate,
            models=tuple(model),
            version=version,
            security_version=security_version,
            component=component,
            documents=documents,
        )
        async with state.db.session() as s:
            return await vendor_releases.store_vendor_release(
                s, upload, state.blobs, actor=who, now=state.clock()
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
