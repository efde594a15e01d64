"""Signed, expiring firmware download URLs.

The OCPP ``firmware.location`` handed to a station is
``<base>/firmware/sha256/<hex>?station=<id>&req=<requestId>&expires=<unix>&sig=<hmac>``: the
blob is public by digest in principle, but the server only serves it to the station it was
issued for, until it expires.  ``req`` is the UpdateFirmware (or PublishFirmware) requestId
the link was issued for, 0 for none: the bytes sent are counted against it
(:mod:`chargeward.server.rollout.link_budget`).  The HMAC key is a random secret kept in the data
directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

KEY_FILE = "download-url.key"
DOWNLOAD_URL_TTL = dt.timedelta(days=2)  # how long a signed download link stays valid


def load_or_create_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _mac(key: bytes, sha256: str, station: str, expires: int, request: int) -> str:
    msg = f"{sha256}\n{station}\n{expires}\n{request}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:32]


def signed_path(key: bytes, sha256: str, station: str, expires: int, request: int = 0) -> str:
    mac = _mac(key, sha256, station, expires, request)
    query = urlencode({"station": station, "req": request, "expires": expires, "sig": mac})
    return f"/firmware/sha256/{sha256}?{query}"


def check(
    key: bytes, sha256: str, station: str, expires: int, sig: str, now: int, request: int = 0
) -> bool:
    if now > expires:
        return False
    if not sig.isascii():  # compare_digest raises TypeError on a non-ASCII str (issue 26)
        return False
    return hmac.compare_digest(_mac(key, sha256, station, expires, request), sig)
