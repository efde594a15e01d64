"""A published release with a delta, ready to roll out to a real agent with TUF checks on.

The station runs 1.0.0 (its factory image, also uploaded to the server so the server can make
a delta from it) and reports it before 1.1.0 is uploaded; 1.1.0 is approved by two approvers
from the bundle in hand, its delta listed beside its image, and published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chargeward.agent.agent import Agent
from tests.support.campaigns import ALL_DAY, agents, api
from tests.support.fleet import Pki, Server, cli, running_server
from tests.support.trust import TufKeys, person_tokens

STATION = "CP-DELTA"
PAYLOAD_100 = b"".join(b"block %06d of release 1.0.0\n" % i for i in range(8000))
PAYLOAD_110 = PAYLOAD_100.replace(b"block 000100", b"patch 000100") + b"new in 1.1.0\n"


@dataclass
class DeltaLab:
    srv: Server
    agent: Agent
    data: Path
    factory: Path  # the 1.0.0 bundle the station runs
    release: dict[str, Any]  # the server's view of 1.1.0, with its delta


@contextlib.asynccontextmanager
async def published_delta_release(tmp_path: Path, pki: Pki) -> AsyncIterator[DeltaLab]:
    data = tmp_path / "server-data"
    root_json = tmp_path / "root.json"
    keys = TufKeys.create(tmp_path / "tuf-keys")
    keys.init_cli(data, root_out=root_json)
    factory = pki.bundle(tmp_path / "acme-1.0.0.cwb", "1.0.0", 1, payload=PAYLOAD_100)
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, payload=PAYLOAD_110)
    with running_server(tmp_path, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        tokens = await asyncio.to_thread(person_tokens, data)

        def as_(who: str, *args: str) -> str:
            env = {"CHARGEWARD_API_TOKEN": tokens[who]}
            return cli(*args, "--data-dir", str(data), env=env).stdout

        await asyncio.to_thread(as_, "carol", "release", "upload", str(factory))
        tuf_root = root_json.read_bytes()
        async with agents(srv, tmp_path, pki, factory, [STATION], tuf_root=tuf_root) as running:
            await asyncio.to_thread(as_, "carol", "release", "upload", str(update))
            [release] = [
                r for r in await api(srv, "GET", "/api/v1/releases") if r["version"] == "1.1.0"
            ]
            for who in ("alice", "bob"):
                await asyncio.to_thread(
                    as_, who, "release", "approve", release["id"], "--key", keys.uri(who),
                    "--bundle", str(update), "--root", str(pki.root_pem),
                )  # fmt: skip
            await asyncio.to_thread(as_, "carol", "release", "publish", release["id"])
            await api(srv, "POST", "/api/v1/sites", json={
                "id": "depot", "name": "Depot", "timezone": "Europe/London",
                "maintenance_windows": ALL_DAY,
            })  # fmt: skip
            await api(srv, "PATCH", f"/api/v1/stations/{STATION}", json={"site_id": "depot"})
            yield DeltaLab(srv, running[STATION], data, factory, release)
