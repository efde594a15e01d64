"""Everything a running server holds, handed to the API and the OCPP listener."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from chargeward.crypto import load_certificates
from chargeward.errors import ConfigError
from chargeward.server.blobs import BlobStore
from chargeward.server.csms import Registry
from chargeward.server.db import Database

TRUST_FILE = Path("trust") / "manufacturer-roots.pem"
DOWNLOAD_URL_TTL = dt.timedelta(days=2)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class ServerState:
    data_dir: Path
    db: Database
    blobs: BlobStore
    url_key: bytes
    public_url: str
    registry: Registry = field(default_factory=Registry)
    clock: Callable[[], dt.datetime] = _utc_now

    def manufacturer_roots(self) -> list[x509.Certificate]:
        path = self.data_dir / TRUST_FILE
        if not path.exists():
            raise ConfigError(
                "no Manufacturer Root CA configured: start the server with --manufacturer-root"
            )
        return load_certificates(path.read_bytes())
