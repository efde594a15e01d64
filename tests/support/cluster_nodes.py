"""Server nodes of one cluster for chaos tests: start, SIGKILL, SIGSTOP/SIGCONT, restart, and a
watch on who leads.

Every node shares one data directory (blobs, download-URL key, checkpoint key, admin token:
any node serves a download another signed) and one PostgreSQL database, and tells stations
the balancer's HTTP address as its public URL.  Each incarnation of a node logs to its own
file (``<name>.<n>.log``), so a restart keeps what the killed process wrote.

    nodes = ClusterNodes(data, root_pem, env, balancer, extra_args)
    await nodes.start("a"); await nodes.start("b")
    watch = LeaderWatch(nodes); task = asyncio.create_task(watch.run())
    leader = await watch.wait_leader(timeout=20)
    await nodes.kill(leader); await watch.wait_leader(other_than=leader, timeout=20)
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chargeward.local import Process, start_server
from tests.support.balancer import Balancer

HEALTH_TIMEOUT = 1.0
_HTTP_5XX = re.compile(
    r'^chargeward_http_requests_total\{(?P<labels>[^}]*status="5\d\d"[^}]*)\} (?P<value>\S+)$',
    re.MULTILINE,
)
POLL = 0.25


def server_options() -> str:
    """``chargeward server --help`` (wide, so no option is cut short)."""
    out = subprocess.run(
        [sys.executable, "-m", "chargeward", "server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    return out.stdout


@dataclass
class Node:
    name: str
    process: Process
    api_url: str
    node_id: str
    incarnation: int
    paused: bool = False

    @property
    def alive(self) -> bool:
        return self.process.popen.poll() is None


@dataclass
class ClusterNodes:
    data_dir: Path
    root_pem: Path
    env: dict[str, str]
    balancer: Balancer
    extra_args: Sequence[str] = ()
    nodes: dict[str, Node] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)
    token: str | None = None  # the operator token, once known: metrics are read with it
    # HTTP 5xx each node answered (its metrics, read before it is killed and at the end)
    http_5xx: Counter[str] = field(default_factory=Counter)
    _incarnations: dict[str, int] = field(default_factory=dict)

    async def start(self, name: str) -> Node:
        """Start (or restart) node ``name``; it takes new connections from the balancer."""
        n = self._incarnations[name] = self._incarnations.get(name, 0) + 1
        log = self.data_dir.parent / f"node-{name}.{n}.log"
        self.logs.append(log)
        # One at a time: server.json is the shared data directory's, rewritten by each start.
        proc, info = await asyncio.to_thread(
            start_server,
            self.data_dir,
            self.root_pem,
            log,
            env=self.env,
            public_url=self.balancer.http_url,
            extra_args=self.extra_args,
        )
        node = self.nodes[name] = Node(name, proc, info["api_url"], info["node_id"], n)
        self.balancer.set_node(
            name, ocpp=_address(info["ocpp_url"]), http=_address(info["api_url"])
        )
        return node

    async def read_5xx(self, name: str) -> None:
        """Add the 5xx answers node ``name`` counted (``chargeward_http_requests_total``)."""
        node = self.nodes[name]
        if self.token is None or not node.alive or node.paused:
            return
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(
                f"{node.api_url}/metrics", headers={"Authorization": f"Bearer {self.token}"}
            )
        r.raise_for_status()
        for m in _HTTP_5XX.finditer(r.text):
            self.http_5xx[f"{m['labels']}"] += int(float(m["value"]))

    async def kill(self, name: str) -> None:
        """SIGKILL (no goodbye); the balancer sends no new connection there.  Its 5xx count
        is read just before."""
        node = self.nodes[name]
        self.balancer.mark(name, up=False)
        await self.read_5xx(name)
        node.process.popen.send_signal(signal.SIGKILL)
        await asyncio.to_thread(node.process.popen.wait, 10)

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        self.balancer.mark(name, up=False)
        node.process.popen.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        node.process.popen.send_signal(signal.SIGCONT)
        node.paused = False
        self.balancer.mark(name, up=True)

    def stop_all(self) -> list[str]:
        """SIGCONT and SIGTERM every node still running; returns every incarnation's log."""
        for node in self.nodes.values():
            if node.paused and node.alive:
                node.process.popen.send_signal(signal.SIGCONT)
            node.process.stop()
        return [log.read_text(errors="replace") for log in self.logs if log.exists()]


@dataclass
class Failover:
    at: float  # monotonic time the new leader was first seen
    leader: str  # node name
    node_id: str


@dataclass
class LeaderWatch:
    """Polls every live, unpaused node's ``/healthz`` and records who says it leads."""

    nodes: ClusterNodes
    leaders: list[Failover] = field(default_factory=list)  # each change of leader
    most_at_once: int = 0  # the most nodes claiming leadership in one round
    rounds: int = 0

    @property
    def current(self) -> str | None:
        return self.leaders[-1].leader if self.leaders else None

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT) as client:
            while True:
                await self._round(client)
                await asyncio.sleep(POLL)

    async def _round(self, client: httpx.AsyncClient) -> None:
        live = [n for n in self.nodes.nodes.values() if n.alive and not n.paused]

        async def health(node: Node) -> tuple[Node, bool]:
            try:
                r = await client.get(f"{node.api_url}/healthz")
                return node, bool(r.json().get("leader"))
            except (httpx.HTTPError, ValueError):
                return node, False

        said = await asyncio.gather(*(health(n) for n in live))
        claiming = [n for n, leads in said if leads]
        self.rounds += 1
        self.most_at_once = max(self.most_at_once, len(claiming))
        if len(claiming) == 1:
            node = claiming[0]
            last = self.leaders[-1] if self.leaders else None
            if last is None or last.node_id != node.node_id:
                self.leaders.append(Failover(time.monotonic(), node.name, node.node_id))

    async def wait_leader(self, *, other_than: str | None = None, timeout: float) -> Failover:
        """The leader, once one is seen (not the node whose id is ``other_than``)."""
        deadline = time.monotonic() + timeout
        while True:
            last = self.leaders[-1] if self.leaders else None
            if last is not None and (other_than is None or last.node_id != other_than):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"no leader other than {other_than} within {timeout} s")
            await asyncio.sleep(POLL / 2)


def _address(url: str) -> tuple[str, int]:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    return host, int(port)
