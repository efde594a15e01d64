"""The ocpp-rpc peers of tests/interop/node/ as asyncio subprocesses speaking JSON lines.

Each script prints one JSON object a line on stdout (what it sent and received) and reads
commands the same way on stdin::

    async with node_peer("csms.js") as csms:
        listening = await csms.wait(lambda e: e["event"] == "listening", "the port")
        csms.send({"cmd": "call", "ref": "u1", "station": "CP-1", "action": "Heartbeat",
                   "params": {}})

The dependencies come from ``make interop-deps`` (``npm ci`` in tests/interop/node).  With
``CHARGEWARD_INTEROP_LOG=file`` every event of every peer is appended to ``file`` as it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).parent / "node"
Event = dict[str, Any]


def require_node() -> str:
    """The node binary; a clear failure when it or ocpp-rpc is missing."""
    node = shutil.which("node")
    assert node is not None, "node (v18 or later) is needed for the interop suite"
    assert (NODE_DIR / "node_modules" / "ocpp-rpc").is_dir(), (
        "ocpp-rpc is not installed: run `make interop-deps` (npm ci in tests/interop/node)"
    )
    return node


@dataclass
class NodePeer:
    """A running script: ``events`` holds every line it printed, in order."""

    proc: asyncio.subprocess.Process
    events: list[Event] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line:
                self.events.append(json.loads(line))
                self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode().rstrip())

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def wait(
        self, pred: Callable[[Event], bool], what: str, timeout: float = 30, start: int = 0
    ) -> Event:
        """The first event from index ``start`` on that satisfies ``pred``."""

        async def first() -> Event:
            seen = start
            while True:
                for event in self.events[seen:]:
                    if event.get("event") == "fatal":
                        raise AssertionError(f"the peer failed: {event}")
                    if pred(event):
                        return event
                seen = max(seen, len(self.events))
                if self.proc.stdout is not None and self.proc.stdout.at_eof():
                    raise AssertionError(f"the peer exited before {what}: {self.stderr[-20:]}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(first(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; events: {self.events[-30:]}"
            ) from None

    def of(self, event: str, **match: Any) -> list[Event]:
        return [
            e
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]


@contextlib.asynccontextmanager
async def node_peer(script: str, *args: str) -> AsyncIterator[NodePeer]:
    node = require_node()
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / script),
        *args,
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    peer = NodePeer(proc)
    readers = [asyncio.create_task(peer._read()), asyncio.create_task(peer._read_stderr())]
    try:
        yield peer
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await asyncio.gather(*readers, return_exceptions=True)
        if log := os.environ.get("CHARGEWARD_INTEROP_LOG"):  # the run docs/interop.md lists
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
            with open(log, "a") as f:
                for event in peer.events:
                    f.write(json.dumps({"test": test, "peer": script, **event}) + "\n")
