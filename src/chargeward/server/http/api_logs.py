"""REST API for logs from stations (OCPP N01 GetLog), as an ``APIRouter``.

    POST /api/v1/stations/{station_id}/logs        send GetLog (audited); returns the request id
    GET  /api/v1/stations/{station_id}/logs        the station's log requests and their statuses
    GET  /api/v1/stations/{station_id}/logs/{id}   the uploaded file
    POST /api/v1/log-uploads/{token}               where the station uploads (PUT works too)

The station routes need the operator bearer token of :mod:`chargeward.server.http.api`, which
includes this router.  The upload route takes no bearer token: the station proves itself by
the one-time token in the URL it was sent (see :mod:`chargeward.server.stations.logs`); an unknown
token gets 404, a used or expired one 410, a file over 8 MiB 413.  The file is the form
field ``file`` of a ``multipart/form-data`` body, or the whole body otherwise.

    $ curl -H "Authorization: Bearer $TOKEN" -d '{"log_type": "SecurityLog"}' \\
           -H 'Content-Type: application/json' $API/api/v1/stations/CP-1/logs
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from chargeward.errors import Conflict, InvalidValue, TransportError, UploadRefused
from chargeward.ocpp.csms import LogAnswer, LogRequest
from chargeward.server.common import inputs
from chargeward.server.common.schemas import LogView, RowId
from chargeward.server.http.api import Operator
from chargeward.server.state import ServerState
from chargeward.server.stations import logs

router = APIRouter(tags=["logs"])
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
_BOUNDARY = re.compile(r'boundary="?([^";,]{1,200})"?')
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class LogCommand(BaseModel):
    log_type: logs.LogType
    oldest: AwareDatetime | None = None
    latest: AwareDatetime | None = None
    retries: int = Field(default=3, ge=0, le=10)
    retry_interval: int = Field(default=10, ge=0, le=3600)

    @model_validator(mode="after")
    def _window(self) -> LogCommand:
        if self.oldest and self.latest and self.oldest > self.latest:
            raise InvalidValue("oldest is after latest")
        return self


class LogRequested(BaseModel):
    request_id: int
    transaction_id: str
    station_response: str  # Accepted/Rejected/AcceptedCanceled, NoResponse or CallError
    filename: str | None
    upload_expires_at: dt.datetime


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


@router.post("/api/v1/stations/{station_id}/logs", response_model=LogRequested)
async def request_log(
    station_id: str, body: LogCommand, request: Request, who: Operator
) -> LogRequested:
    state = _state(request)
    async with state.db.snapshot() as s:
        await logs.require_station(s, station_id)
    cp = await state.station(station_id)
    if cp is None:
        raise Conflict(f"station {station_id} is not connected")
    order = await state.db.write(
        lambda s: logs.begin_request(
            s,
            station_id,
            body.log_type,
            oldest=body.oldest,
            latest=body.latest,
            actor=who,
            now=state.clock(),
        )
    )
    try:
        answer = await cp.get_log(
            LogRequest(
                request_id=order.request_id,
                log_type=order.log_type,
                remote_location=state.public_url + logs.UPLOAD_PATH + order.token,
                oldest=order.oldest,
                latest=order.latest,
                retries=body.retries,
                retry_interval=body.retry_interval,
            )
        )
    except (TransportError, Conflict) as e:
        status = "NoResponse" if isinstance(e, TransportError) else "CallError"
        answer = LogAnswer(status, None, None, str(e)[:512])
    await state.db.write(
        lambda s: logs.record_response(
            s, order.request_id, answer.status, answer.filename, now=state.clock()
        )
    )
    return LogRequested(
        request_id=order.request_id,
        transaction_id=order.transaction_id,
        station_response=answer.status,
        filename=answer.filename,
        upload_expires_at=order.expires_at,
    )


@router.get("/api/v1/stations/{station_id}/logs", response_model=list[LogView])
async def list_logs(station_id: str, request: Request, _: Operator) -> list[LogView]:
    async with _state(request).db.snapshot() as s:
        records = await logs.list_logs(s, station_id)
    return records


@router.get("/api/v1/stations/{station_id}/logs/{request_id}", response_class=FileResponse)
async def get_log_file(
    station_id: str, request_id: RowId, request: Request, _: Operator
) -> FileResponse:
    state = _state(request)
    async with state.db.snapshot() as s:
        record = await logs.uploaded_log(s, station_id, request_id)
    assert record.sha256 is not None
    name = _SAFE_NAME.sub("_", record.filename or "")[:120] or f"log-{request_id}"
    return FileResponse(  # station-made content: never rendered by a browser
        state.blobs.path(record.sha256),
        media_type="application/octet-stream",
        filename=name,
        headers={"X-Content-Type-Options": "nosniff"},
    )


class LogUploaded(BaseModel):
    request_id: int
    sha256: str
    length: int


@router.post(
    "/api/v1/log-uploads/{token}",
    response_model=LogUploaded,
    status_code=201,
    operation_id="upload_station_log",
)
@router.put(
    "/api/v1/log-uploads/{token}",
    response_model=LogUploaded,
    status_code=201,
    operation_id="upload_station_log_put",
)
async def receive_log(token: str, request: Request) -> LogUploaded:
    state = _state(request)
    refused = _token_problem(token)
    if refused is None:
        async with state.db.session() as s:
            refused = await logs.check_upload(s, token, now=state.clock())
    if refused is not None:
        raise _refusal(refused)
    declared = request.headers.get("content-length", "")
    size = inputs.row_id(declared, 18)
    most = state.limits.log_upload_bytes
    if size is not None and size > most + MULTIPART_OVERHEAD:
        raise HTTPException(413, f"a log file may be at most {most} bytes")
    body = await _read_capped(request.stream(), most)
    data, filename = _uploaded_file(body, request.headers.get("content-type", ""))
    if len(data) > most:
        raise HTTPException(413, f"a log file may be at most {most} bytes")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        async with state.db.session() as s:
            record = await logs.claim_upload(
                s, token, sha256=sha256, length=len(data), filename=filename, now=state.clock()
            )
            await asyncio.to_thread(_store_blob, state, data, sha256)  # before the commit
    except UploadRefused as e:
        raise _refusal(e) from e
    return LogUploaded(request_id=record.request_id, sha256=sha256, length=len(data))


def _token_problem(token: str) -> UploadRefused | None:
    return None if 16 <= len(token) <= 100 else UploadRefused(404, "unknown")


def _refusal(e: UploadRefused) -> HTTPException:
    if e.reason == "unknown":
        return HTTPException(404, "no such upload URL")
    return HTTPException(410, f"this upload URL is {e.reason}")


def _store_blob(state: ServerState, data: bytes, sha256: str) -> None:
    with tempfile.TemporaryDirectory(dir=state.data_dir / "tmp") as work:
        tmp = Path(work) / "log"
        tmp.write_bytes(data)
        state.blobs.put(tmp, sha256, len(data))


async def _read_capped(chunks: AsyncIterator[bytes], most: int) -> bytes:
    """The multipart body of a log file of at most ``most`` bytes (413 past it)."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > most + MULTIPART_OVERHEAD:
            raise HTTPException(413, f"a log file may be at most {most} bytes")
    return bytes(body)


def _uploaded_file(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The file and its name: the ``file`` field of a multipart form, else the whole body."""
    if not content_type.lower().startswith("multipart/form-data"):
        if not body:
            raise HTTPException(400, "empty upload")
        return body, None
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise HTTPException(400, "multipart body without a boundary")
    delimiter = b"--" + m.group(1).encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = next(
            (
                line.decode("latin-1")
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-disposition:")
            ),
            "",
        )
        if not re.search(r';\s*name="?file"?(;|$|\s)', disposition):
            continue
        if not content.endswith(b"\r\n"):
            raise HTTPException(400, "malformed multipart body")
        name = re.search(r';\s*filename="([^"]{0,255})"', disposition)
        return content[:-2], name.group(1) if name else None
    raise HTTPException(400, 'multipart upload without a "file" field')
