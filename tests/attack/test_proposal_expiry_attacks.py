"""A hostile or careless server cannot make approvers sign, or chargers receive, targets
metadata outside the policy.

- A hostile server proposes targets that expire in ten years, changes the metadata's other
  fields, or drops, changes or adds a target that is not the release's: the approver's
  ``chargeward release approve`` refuses, says why, and signs and sends nothing.
- An old proposal, approved in time but published after its expiry (or within the publishing
  margin): publishing is refused with a clear error, nothing is published and the metadata
  chargers fetch is unchanged; fetched again, the proposal is remade for a fresh approval.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tuf.api.metadata import Metadata, TargetFile, Targets
from typer.testing import CliRunner

from chargeward.audit.tables import AuditEntry
from chargeward.cli.main import app
from chargeward.cli.release_approval import _expected_targets
from chargeward.crypto.pki import certificate_pem
from chargeward.errors import TrustError
from chargeward.publish import ImageRepository
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.server.auth import tokens
from chargeward.server.runtime import add_manufacturer_root
from chargeward.server.store.tables import Proposal
from chargeward.trust.approval import Approval as ApprovalRecord
from chargeward.trust.approval import label_accounts, signed_proposal
from tests.support.api_app import running_api
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.trust import TufKeys

SIG = base64.b64encode(b"OCPP signature of main").decode()
RELEASE_ID = "ab" * 32
PUBLISHED = "firmware/AC22/1.0.0/main.cwfw"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TufKeys:
    return TufKeys.create(tmp_path_factory.mktemp("expiry-keys"))


def _view() -> dict[str, Any]:
    """Release 1.1.0 as the server describes it (the approver's expectation comes from it)."""
    return {
        "id": RELEASE_ID,
        "version": "1.1.0",
        "security_version": 2,
        "hardware_models": ["AC22"],
        "release_class": "security",
        "customer": None,
        "images": [{"component": "main", "sha256": "cd" * 32, "length": 4321, "signature": SIG}],
        "documents": {},
        "deltas": [],
    }


def _published_repo(directory: Path, keys: TufKeys, now: dt.datetime) -> ImageRepository:
    """A repository with release 1.0.0 published by alice and bob."""
    repo = keys.init_repo(directory, now)
    first = release_targets(
        version="1.0.0",
        security_version=1,
        models=["AC22"],
        release_class="feature",
        customer=None,
        images=[ImageFacts("main", "ee" * 32, 1234, SIG)],
    )
    proposal = repo.propose(first, now=now)
    approvals = []
    for who in ("alice", "bob"):
        sig = keys.tuf(who).sign(proposal.signed_bytes)
        approvals.append(ApprovalRecord(sig.keyid, who, sig.signature, who))
    root = repo.root().signed
    repo.publish_targets(
        signed_proposal(root, proposal, approvals, label_accounts(root)), keys.online(), now=now
    )
    return repo


class HostileServer:
    """Serves the genuine repository metadata, but proposals of its own making."""

    def __init__(self, repo: ImageRepository, proposal: Metadata[Targets]) -> None:
        self.repo, self.proposal = repo, proposal
        self.approvals: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.startswith("/tuf/metadata/"):
                    name = self.path.rsplit("/", 1)[1]
                    path = outer.repo.metadata_dir / name
                    if path.is_file():
                        self._send(200, path.read_bytes())
                    else:
                        self._send(404, b"{}")
                elif self.path == f"/api/v1/releases/{RELEASE_ID}":
                    self._send(200, json.dumps(_view()).encode())
                elif self.path == f"/api/v1/proposals/{RELEASE_ID}":
                    view = {
                        "id": 7,
                        "state": "open",
                        "release_id": RELEASE_ID,
                        "metadata": outer.proposal.to_bytes().decode(),
                    }
                    self._send(200, json.dumps(view).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.approvals.append(json.loads(self.rfile.read(length)))
                self._send(200, json.dumps({"summary": "needs 1 more approval (1 of 2)"}).encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{self.httpd.server_address[1]}"
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()
            thread.join(10)


def _custom_changed(md: Metadata[Targets]) -> None:
    md.signed.targets[PUBLISHED].unrecognized_fields["custom"]["security_version"] = 9


def _extra_target(md: Metadata[Targets]) -> None:
    path = "firmware/AC22/6.6.6/main.cwfw"
    md.signed.targets[path] = TargetFile(4, {"sha256": "66" * 32}, path)


HOSTILE: dict[str, tuple[Callable[[Metadata[Targets], dt.datetime], None], str]] = {
    "ten-year-expiry": (
        lambda md, now: setattr(md.signed, "expires", now + dt.timedelta(days=3650)),
        "beyond the 90-day targets lifetime",
    ),
    "already-expired": (
        lambda md, now: setattr(md.signed, "expires", now - dt.timedelta(hours=1)),
        "every charger would refuse it",
    ),
    "expires-within-margin": (
        lambda md, now: setattr(md.signed, "expires", now + dt.timedelta(hours=3)),
        "within the 1-day publishing margin",
    ),
    "drops-a-published-target": (
        lambda md, now: md.signed.targets.pop(PUBLISHED),
        f"removes the published target {PUBLISHED}",
    ),
    "changes-a-published-target": (
        lambda md, now: _custom_changed(md),
        f"alters the published target {PUBLISHED}",
    ),
    "adds-an-extra-target": (
        lambda md, now: _extra_target(md),
        "adds firmware/AC22/6.6.6/main.cwfw, which is not part of this release",
    ),
    "changes-spec-version": (
        lambda md, now: setattr(md.signed, "spec_version", "1.0.0"),
        "changes spec_version of the published targets metadata",
    ),
    "adds-a-field": (
        lambda md, now: md.signed.unrecognized_fields.update({"x-extra": "anything"}),
        "changes x-extra of the published targets metadata",
    ),
}


@pytest.mark.parametrize("attack", [*HOSTILE, "honest"])
def test_approver_refuses_a_hostile_proposal(
    attack: str, tmp_path: Path, keys: TufKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(dt.UTC)
    repo = _published_repo(tmp_path / "tuf", keys, now)
    proposal = repo.propose(_expected_targets(_view(), None, []), now=now)
    if attack != "honest":
        HOSTILE[attack][0](proposal, now)
    server = HostileServer(repo, proposal)
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    monkeypatch.setenv("CHARGEWARD_API_TOKEN", "cwt_approver")
    root = tmp_path / "root.json"
    root.write_bytes((repo.metadata_dir / "1.root.json").read_bytes())
    with server.running() as url:
        result = CliRunner().invoke(
            app,
            [
                *("release", "approve", RELEASE_ID, "--key", keys.uri("alice")),
                *("--tuf-root", str(root), "--server", url, "--data-dir", str(tmp_path)),
            ],
        )
    if attack == "honest":  # control: the same approver signs an honest proposal
        assert result.exit_code == 0, (result.output, result.exception)
        assert [a["keyid"] for a in server.approvals] == [keys.tuf("alice").public_key.keyid]
        return
    assert isinstance(result.exception, TrustError), (result.output, result.exception)
    assert HOSTILE[attack][1] in str(result.exception)
    assert server.approvals == []  # nothing signed was sent


@pytest.fixture
def server_data(tmp_path: Path, keys: TufKeys, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A server data directory with a repository made by ``chargeward repo init``."""
    data = tmp_path / "srv"
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    init = CliRunner().invoke(app, keys.init_args(data))
    assert init.exit_code == 0, (init.output, init.exception)
    (data / "tmp").mkdir(exist_ok=True)
    add_manufacturer_root(data, certificate_pem(pki.root_cert).encode())
    return data


async def test_an_expired_proposal_is_not_published(
    server_data: Path, keys: TufKeys, pki: Pki
) -> None:
    data = server_data
    start = dt.datetime.now(dt.UTC)
    async with running_api(data, start) as api:
        headers = {}
        async with api.db.session() as s:
            for name in ("bob", "carol"):
                token = await tokens.create_token(s, name, actor="test", now=start)
                headers[name] = {"Authorization": f"Bearer {token}"}
        headers["alice"] = {}  # running_api's client acts as alice
        der = pki.crl([pki.signing_cert.serial_number], now=start)
        r = await api.client.post(
            "/api/v1/repository/revocations",
            content=der,
            headers={**headers["carol"], "Content-Type": "application/pkix-crl"},
        )
        assert r.status_code == 201, r.text
        number = r.json()["id"]

        async def approve_all() -> None:
            view = await api.call("GET", f"/api/v1/proposals/{number}")
            md = Metadata[Targets].from_bytes(view["metadata"].encode())
            for name in ("alice", "bob"):
                sig = keys.tuf(name).sign(md.signed_bytes)
                body = {"keyid": sig.keyid, "signature": sig.signature}
                await api.call(
                    "POST",
                    f"/api/v1/proposals/{number}/approvals",
                    json=body,
                    headers=headers[name],
                )

        await approve_all()
        metadata = {p.name: p.read_bytes() for p in api.state.repository.metadata_dir.iterdir()}
        # Approved in time, published late: after its expiry, then just within the margin.
        for later, why in (
            (dt.timedelta(days=91), "expired at"),
            (dt.timedelta(days=89, hours=12), "within the 1-day publishing margin"),
        ):
            api.clock.now = start + later
            r = await api.client.post(f"/api/v1/proposals/{number}/publish")
            assert r.status_code == 409, r.text
            message = r.json()["error"]["message"]
            assert why in message and "proposed and approved again" in message
            # Nothing published: the metadata chargers fetch is byte for byte the same.
            after = {p.name: p.read_bytes() for p in api.state.repository.metadata_dir.iterdir()}
            assert after == metadata
            async with api.db.snapshot() as s:
                row = await s.get(Proposal, number)
                assert row is not None and row.state == "open"
                actions = (await s.scalars(select(AuditEntry.action))).all()
                assert "revocation.published" not in actions
        # Fetched again, the proposal is remade with a fresh expiry and approved anew.
        view = await api.call("GET", f"/api/v1/proposals/{number}")
        assert view["approvers"] == [] and view["missing"] == 2
        await approve_all()
        published = await api.call("POST", f"/api/v1/proposals/{number}/publish")
        assert published["state"] == "published"
        assert api.state.repository.targets().signed.expires > api.clock.now + dt.timedelta(days=89)
