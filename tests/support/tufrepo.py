"""A TUF image repository for tests, served over a real loopback HTTP server.

In the spirit of python-tuf's ``tests/repository_simulator.py``, but the client under test
talks real HTTP: the repository is built with ``tuf.api.metadata`` and securesystemslib ECDSA
keys (root 2-of-3, targets 2-of-3, one snapshot and one timestamp key, consistent snapshots,
the ``x-chargeward-issued`` timestamp field) and served by a ``ThreadingHTTPServer`` on
127.0.0.1 with an ephemeral port, laid out as the Chargeward server lays it out::

    <url>metadata/1.root.json, N.root.json, timestamp.json, N.snapshot.json, N.targets.json,
                  N.model-<model>.json
    <url>targets/<dir>/<sha256>.<basename>
    <url>downloads/<name>                      (plain files, e.g. firmware for UpdateFirmware)

    clock = Clock()
    with TufRepo(clock) as repo:
        repo.add_firmware(image, TargetCustom(("AC22",), "1.1.0", 2, "main", "security"))
        repo.publish()
        client = RepositoryClient(state, repo.url, clock=clock)  # bootstrap repo.root_json()

Misbehaviour for attack tests is explicit: :meth:`TufRepo.serve` replaces what a URL returns,
:meth:`TufRepo.publish` takes the signers to use and can list an older targets version,
:meth:`TufRepo.publish_timestamp` can sign any version or an expired timestamp, and
:meth:`TufRepo.rotate_root` rotates root keys, replaces the timestamp key or revokes a
targets key.  The clock is injected, as the agent's is: tests never sleep.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from chargeward.model.targets import (
    FIRMWARE_PREFIX,
    REVOCATION_TARGET,
    TargetCustom,
    firmware_target_path,
)

ISSUED_FIELD = "x-chargeward-issued"
TIMESTAMP_TTL = dt.timedelta(days=1)
ROLE_TTL = dt.timedelta(days=30)
ROOT_TTL = dt.timedelta(days=365)
_SERIALIZER = JSONSerializer(compact=True)


class Clock:
    """A settable UTC clock shared by the repository and the charger under test."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = (start or dt.datetime.now(dt.UTC)).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


def _keys(n: int) -> list[Signer]:
    return [CryptoSigner.generate_ecdsa() for _ in range(n)]


class TufRepo:
    """A python-tuf repository whose every published file is served at :attr:`url`."""

    def __init__(
        self, clock: Callable[[], dt.datetime] | None = None, *, meta_hashes: bool = False
    ) -> None:
        self.clock = clock or Clock()
        self.meta_hashes = meta_hashes  # list length + hashes in timestamp/snapshot meta
        self.keys: dict[str, list[Signer]] = {
            Root.type: _keys(3),
            Targets.type: _keys(3),
            Snapshot.type: _keys(1),
            Timestamp.type: _keys(1),
        }
        self.files: dict[str, bytes] = {}
        self.delays: dict[str, float] = {}  # seconds to stall before answering a name
        self.requests: list[str] = []
        self.history: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        now = self.clock()
        root = Root(expires=now + ROOT_TTL, consistent_snapshot=True)
        for role, signers in self.keys.items():
            for signer in signers:
                root.add_key(signer.public_key, role)
        root.roles[Root.type].threshold = 2
        root.roles[Targets.type].threshold = 2
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=now + ROLE_TTL))
        self.delegated: dict[str, Metadata[Targets]] = {}
        self.delegated_keys: dict[str, Signer] = {}
        self.snapshot = Metadata(Snapshot(expires=now + ROLE_TTL))
        self.timestamp = Metadata(Timestamp(expires=now + TIMESTAMP_TTL, snapshot_meta=MetaFile()))
        self.timestamp_version = 0
        self._sign(self.root, self.keys[Root.type][:2])
        self._store(Root.type, self.root)
        self.publish(first=True)

    # -- serving -------------------------------------------------------------------------

    def __enter__(self) -> TufRepo:
        repo = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.split("?", 1)[0].removeprefix("/tuf/")
                with repo._lock:
                    repo.requests.append(name)
                    body = repo.files.get(name)
                    delay = repo.delays.get(name, 0.0)
                if delay:
                    time.sleep(delay)  # a slow server; the client's timeout must end the wait
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a stalled answer

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use the repository as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}/tuf/"

    def serve(self, name: str, data: bytes | None) -> None:
        """Make ``<url><name>`` return ``data`` (None: 404), whatever was published."""
        with self._lock:
            if data is None:
                self.files.pop(name, None)
            else:
                self.files[name] = data

    def root_json(self, version: int = 1) -> bytes:
        return self.history[Root.type][version]

    # -- content -------------------------------------------------------------------------

    def delegate_model(self, model: str) -> str:
        """Give ``firmware/<model>/`` to a delegated role ``model-<model>`` (1-of-1 key)."""
        name = f"model-{model}"
        signer = _keys(1)[0]
        role = DelegatedRole(name, [], 1, terminating=True, paths=[f"{FIRMWARE_PREFIX}{model}/*/*"])
        if self.targets.signed.delegations is None:
            self.targets.signed.delegations = Delegations(keys={}, roles={})
        assert self.targets.signed.delegations.roles is not None
        self.targets.signed.delegations.roles[name] = role
        self.targets.signed.add_key(signer.public_key, name)
        self.delegated[name] = Metadata(Targets(expires=self.clock() + ROLE_TTL))
        self.delegated_keys[name] = signer
        return name

    def add_firmware(self, data: bytes, custom: TargetCustom) -> list[str]:
        """List ``data`` once per model in ``custom`` (in ``model-<model>`` when delegated)."""
        paths = []
        for model in custom.models:
            path = firmware_target_path(model, custom.version, custom.component)
            tf = TargetFile.from_data(path, data, ["sha256"])
            tf.unrecognized_fields["custom"] = custom.to_dict()
            self._role_for(model).signed.targets[path] = tf
            directory, _, base = path.rpartition("/")
            self.serve(f"targets/{directory}/{tf.hashes['sha256']}.{base}", data)
            paths.append(path)
        return paths

    def remove_target(self, path: str) -> None:
        model = path.removeprefix(FIRMWARE_PREFIX).split("/", 1)[0]
        del self._role_for(model).signed.targets[path]

    def add_revocation_list(self, der: bytes) -> str:
        """List ``der`` as the firmware-signing CRL (top-level targets); :meth:`publish` next."""
        tf = TargetFile.from_data(REVOCATION_TARGET, der, ["sha256"])
        self.targets.signed.targets[REVOCATION_TARGET] = tf
        directory, _, base = REVOCATION_TARGET.rpartition("/")
        self.serve(f"targets/{directory}/{tf.hashes['sha256']}.{base}", der)
        return REVOCATION_TARGET

    def _role_for(self, model: str) -> Metadata[Targets]:
        return self.delegated.get(f"model-{model}", self.targets)

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self,
        *,
        targets_signers: Sequence[Signer] | None = None,
        list_targets_version: int | None = None,
        first: bool = False,
    ) -> None:
        """New targets (and delegated roles), snapshot and timestamp, in TUF publish order.

        ``targets_signers`` defaults to a threshold of current targets keys;
        ``list_targets_version`` makes the snapshot list an older targets version (what a
        server holding only the online keys could try).
        """
        now = self.clock()
        if list_targets_version is None:
            for name, md in self.delegated.items():
                md.signed.version += 0 if first else 1
                md.signed.expires = now + ROLE_TTL
                self._sign(md, [self.delegated_keys[name]])
                self._store(name, md)
            self.targets.signed.version += 0 if first else 1
            self.targets.signed.expires = now + ROLE_TTL
            self._sign(self.targets, targets_signers or self.keys[Targets.type][:2])
            self._store(Targets.type, self.targets)
        snap = self.snapshot.signed
        snap.version += 0 if first else 1
        snap.expires = now + ROLE_TTL
        targets_version = list_targets_version or self.targets.signed.version
        snap.meta = {
            f"{Targets.type}.json": self._meta(Targets.type, targets_version),
            **{f"{n}.json": self._meta(n, md.signed.version) for n, md in self.delegated.items()},
        }
        self._sign(self.snapshot, self.keys[Snapshot.type])
        self._store(Snapshot.type, self.snapshot)
        self.publish_timestamp()

    def publish_timestamp(
        self,
        *,
        version: int | None = None,
        expires_in: dt.timedelta = TIMESTAMP_TTL,
        issued: dt.datetime | None = None,
        signer: Signer | None = None,
        snapshot_meta: MetaFile | None = None,
    ) -> bytes:
        """Sign a timestamp for the current snapshot, as the server does every few minutes.

        ``version`` (a fast-forward), ``expires_in`` (negative: already expired), ``issued``,
        ``signer`` and ``snapshot_meta`` let a test sign what an attacker with the timestamp
        key would.
        """
        now = self.clock()
        if version is None:
            self.timestamp_version += 1
            version = self.timestamp_version
        ts = self.timestamp.signed
        ts.version = version
        ts.expires = now + expires_in
        ts.snapshot_meta = snapshot_meta or self._meta(Snapshot.type, self.snapshot.signed.version)
        ts.unrecognized_fields[ISSUED_FIELD] = (issued or now).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._sign(self.timestamp, [signer or self.keys[Timestamp.type][0]])
        return self._store(Timestamp.type, self.timestamp)

    def rotate_root(
        self,
        *,
        new_root_keys: bool = False,
        new_timestamp_key: bool = False,
        revoke_targets_key: int | None = None,
    ) -> int:
        """Publish root N+1 signed by 2 old and (for new root keys) 2 new root keys."""
        root = self.root.signed
        old_root_keys = self.keys[Root.type]
        if new_root_keys:
            self._replace_keys(Root.type, _keys(3))
        if new_timestamp_key:
            self._replace_keys(Timestamp.type, _keys(1))
        if revoke_targets_key is not None:
            revoked = self.keys[Targets.type].pop(revoke_targets_key)
            root.revoke_key(revoked.public_key.keyid, Targets.type)
            fresh = _keys(1)[0]
            root.add_key(fresh.public_key, Targets.type)
            self.keys[Targets.type].append(fresh)
        root.version += 1
        root.expires = self.clock() + ROOT_TTL
        signers = list(old_root_keys[:2])
        if new_root_keys:
            signers += self.keys[Root.type][:2]
        self._sign(self.root, signers)
        self._store(Root.type, self.root)
        return root.version

    def _replace_keys(self, role: str, signers: list[Signer]) -> None:
        root = self.root.signed
        for old in self.keys[role]:
            root.revoke_key(old.public_key.keyid, role)
        for new in signers:
            root.add_key(new.public_key, role)
        self.keys[role] = signers

    # -- helpers -------------------------------------------------------------------------

    def _meta(self, role: str, version: int) -> MetaFile:
        if not self.meta_hashes:
            return MetaFile(version=version)
        data = self.history[role][version]
        return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})

    @staticmethod
    def _sign(md: Metadata[Any], signers: Sequence[Signer]) -> None:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def _store(self, role: str, md: Metadata[Any]) -> bytes:
        data = md.to_bytes(_SERIALIZER)
        version = md.signed.version
        self.history.setdefault(role, {})[version] = data
        name = "timestamp.json" if role == Timestamp.type else f"{version}.{role}.json"
        self.serve(f"metadata/{name}", data)
        return data
