"""Keys must equal people: attacks on the k-of-n release approval through approver keys.

python-tuf on a charger counts targets *keys*, and the server's rules once compared free-text
owner labels.  Each attack is performed through Chargeward's own tooling (``chargeward repo``)
or the real REST API, and must be refused for the right reason:

- a root in which one person holds two targets keys (``repo init``, ``repo rotate-root``) is
  refused before anything is written, so a real python-tuf client never receives one;
- an account submits an approval made with another person's key: 403 ``not_key_holder``,
  audited, not counted;
- the uploader approves through her own key bound to her under another label (by having a
  colleague submit it): 409, audited, not counted.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Signature, SSlibKey
from tuf.api.metadata import Metadata, Root, Targets
from tuf.ngclient import Updater
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto.pki import certificate_pem
from chargeward.errors import ConfigError
from chargeward.publish.roles import RootChange, next_root
from chargeward.server.auth import tokens as token_service
from chargeward.server.rollout import approver_keys
from chargeward.server.runtime import add_manufacturer_root
from chargeward.trust.tuf_keys import OWNER_FIELD
from tests.support.api_app import Api, running_api
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.trust import APPROVERS, ROOT_HOLDERS, TufKeys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TufKeys:
    made = TufKeys.create(tmp_path_factory.mktemp("approver-keys"))
    made.add("alice-2")
    return made


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    monkeypatch.setenv("CHARGEWARD_ACTOR", "ana")
    return CliRunner()


def init_args(keys: TufKeys, data: Path, targets: list[str], *extra: str) -> list[str]:
    args = ["repo", "init", "--data-dir", str(data)]
    for n in ROOT_HOLDERS:
        args += ["--root-key", f"{n}={keys.uri(n)}"]
    for spec in targets:
        args += ["--targets-key", spec]
    args += ["--snapshot-key", keys.uri("snapshot"), "--timestamp-key", keys.uri("timestamp")]
    return [*args, *extra]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """``directory`` over HTTP on 127.0.0.1 (the repository as chargers fetch it)."""
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def compressed_twin(key: SSlibKey, owner: str) -> SSlibKey:
    """``key`` in another encoding: its SubjectPublicKeyInfo with the compressed point (SEC 1
    2.3.3), so the PEM text and hence the keyid differ."""
    public = load_pem_public_key(key.keyval["public"].encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    point = public.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    spki = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + point
    pem = (
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.encodebytes(spki).decode()
        + "-----END PUBLIC KEY-----\n"
    )
    material = {"keytype": key.keytype, "scheme": key.scheme, "keyval": {"public": pem}}
    keyid = hashlib.sha256(encode_canonical(material).encode()).hexdigest()
    return SSlibKey(keyid, key.keytype, key.scheme, {"public": pem}, {OWNER_FIELD: owner})


def targets_owners(root: Root) -> list[str]:
    return [root.keys[k].unrecognized_fields[OWNER_FIELD] for k in root.roles["targets"].keyids]


def test_one_person_holding_two_targets_keys_is_refused_and_never_reaches_a_tuf_client(
    tmp_path: Path, keys: TufKeys, cli: CliRunner
) -> None:
    data = tmp_path / "srv"
    twin = f"alice={keys.uri('alice-2')}"
    # repo init: alice holds two of the three approver keys (a threshold of 2 by herself).
    for second in (twin, f"Alice ={keys.uri('alice-2')}"):
        targets = [f"alice={keys.uri('alice')}", second, f"bob={keys.uri('bob')}"]
        result = cli.invoke(app, init_args(keys, data, targets))
        assert isinstance(result.exception, ConfigError), result.output
        assert "would hold two targets keys" in str(result.exception)
        assert "keys must equal people" in str(result.exception)
        assert not (data / "tuf" / "metadata").exists()  # nothing written

    ok = cli.invoke(app, init_args(keys, data, [f"{n}={keys.uri(n)}" for n in APPROVERS]))
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert "is held by account alice" in ok.output
    # repo rotate-root: give alice a second targets key, under her name or under another
    # label that is bound to her account.
    sign = ("--sign-with", keys.uri("ana"), "--sign-with", keys.uri("ben"))
    rotate = ["repo", "rotate-root", "--data-dir", str(data), *sign]
    for extra, why in (
        (["--add-targets-key", twin], "alice would hold two targets keys"),
        (
            ["--add-targets-key", f"A. Smith={keys.uri('alice-2')}", "--account", "A. Smith=alice"],
            "account alice would hold two targets keys",
        ),
    ):
        result = cli.invoke(app, [*rotate, *extra])
        assert isinstance(result.exception, ConfigError), result.output
        assert why in str(result.exception)
        assert not (data / "tuf" / "metadata" / "2.root.json").exists()

    # A real python-tuf client (ngclient, as the agent uses) refreshes from the repository.
    first = Metadata[Root].from_bytes((data / "tuf" / "metadata" / "1.root.json").read_bytes())
    client = tmp_path / "charger"
    client.mkdir()
    with served(data / "tuf") as url:
        updater = Updater(
            metadata_dir=str(client),
            metadata_base_url=f"{url}/metadata/",
            target_base_url=f"{url}/targets/",
            bootstrap=first.to_bytes(),
        )
        updater.refresh()
    trusted = Metadata[Root].from_bytes((client / "root.json").read_bytes()).signed
    owners = targets_owners(trusted)
    assert trusted.version == 1 and sorted(owners) == sorted(APPROVERS)
    assert len({o.casefold() for o in owners}) == len(trusted.roles["targets"].keyids)


def test_one_key_in_two_encodings_is_refused_as_two_approvers(
    tmp_path: Path, keys: TufKeys
) -> None:
    """Root holders are asked to sign a root in which alice's key appears a second time,
    PEM-encoded with the compressed point and labelled "dave": two keyids, two owners, one
    key.  python-tuf would count alice's one signature twice (threshold 2 met alone); the
    rotation, the server's key bindings and a hand-made root are all refused."""
    now = dt.datetime.now(dt.UTC)
    repo = keys.init_repo(tmp_path / "tuf", now)
    current = repo.root()
    alice = keys.tuf("alice").public_key
    assert isinstance(alice, SSlibKey)
    twin = compressed_twin(alice, "dave")
    assert twin.keyid != alice.keyid
    # What the attack would buy: one signature of alice, copied under both keyids, meets a
    # threshold of 2 in python-tuf.
    md = Metadata(Targets(version=2, expires=now + dt.timedelta(days=7)))
    sig = keys.tuf("alice").sign(md.signed_bytes)
    forged = copy.deepcopy(current.signed)
    forged.add_key(twin, Targets.type)
    forged.roles[Targets.type].threshold = 2
    sigs = {alice.keyid: sig, twin.keyid: Signature(twin.keyid, sig.signature)}
    assert forged.get_verification_result(Targets.type, md.signed_bytes, sigs).verified
    # repo rotate-root's way: next_root refuses it.
    change = RootChange(add_targets_keys=[twin], targets_threshold=2)
    with pytest.raises(ConfigError, match="are the same public key"):
        next_root(current.signed, change, now=now)
    # A root made by hand and signed by the root holders: the repository refuses to install it.
    forged.version = current.signed.version + 1
    new = Metadata(forged)
    for holder in ROOT_HOLDERS:
        new.sign(keys.tuf(holder), append=True)
    with pytest.raises(ConfigError, match="are the same public key"):
        repo.rotate_root(new, keys.online(), now=now)
    assert not (repo.metadata_dir / "2.root.json").exists()
    assert repo.root().signed.version == 1
    # The server's binding of approver keys to accounts refuses it too.
    with pytest.raises(ConfigError, match="are the same public key"):
        approver_keys.root_bindings(forged)


# -- the server: approvals compare accounts -------------------------------------------------

CAROL_LABEL = "Carol S"  # carol's key, labelled in the root with her full name


@pytest.fixture
def server_data(tmp_path: Path, keys: TufKeys, cli: CliRunner, pki: Pki) -> Path:
    """A repository whose approvers are alice, bob and carol (key labelled "Carol S")."""
    data = tmp_path / "srv"
    targets = [
        f"alice={keys.uri('alice')}",
        f"bob={keys.uri('bob')}",
        f"{CAROL_LABEL}={keys.uri('carol')}",
    ]
    result = cli.invoke(app, init_args(keys, data, targets, "--account", f"{CAROL_LABEL}=carol"))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "(Carol S) is held by account carol" in result.output
    (data / "tmp").mkdir(exist_ok=True)
    add_manufacturer_root(data, certificate_pem(pki.root_cert).encode())
    return data


async def tokens(api: Api, *names: str) -> dict[str, dict[str, str]]:
    out = {"alice": {}}  # running_api's own client acts as alice
    async with api.db.session() as s:
        for name in names:
            token = await token_service.create_token(s, name, actor="test", now=api.clock.now)
            out[name] = {"Authorization": f"Bearer {token}"}
    return out


async def propose_crl(api: Api, pki: Pki, as_: dict[str, str]) -> tuple[int, Metadata[Targets]]:
    der = pki.crl([pki.signing_cert.serial_number], now=api.clock.now)
    r = await api.client.post(
        "/api/v1/repository/revocations",
        content=der,
        headers={**as_, "Content-Type": "application/pkix-crl"},
    )
    assert r.status_code == 201, r.text
    view = r.json()
    return view["id"], Metadata[Targets].from_bytes(view["metadata"].encode())


async def submit(
    api: Api, number: int, md: Metadata[Targets], keys: TufKeys, key: str, as_: dict[str, str]
) -> httpx.Response:
    sig = keys.tuf(key).sign(md.signed_bytes)
    return await api.client.post(
        f"/api/v1/proposals/{number}/approvals",
        json={"keyid": sig.keyid, "signature": sig.signature},
        headers=as_,
    )


async def refusals(api: Api) -> list[dict[str, Any]]:
    entries = await api.call("GET", "/api/v1/audit", params={"limit": 200})
    return [e for e in entries if e["action"] == "revocation.approval_refused"]


async def test_an_account_cannot_submit_an_approval_made_with_another_persons_key(
    server_data: Path, keys: TufKeys, pki: Pki
) -> None:
    async with running_api(server_data, dt.datetime.now(dt.UTC)) as api:
        who = await tokens(api, "bob", "carol")
        number, md = await propose_crl(api, pki, who["carol"])
        # alice submits a signature made with bob's key (taken from his machine, or replayed).
        r = await submit(api, number, md, keys, "bob", who["alice"])
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "not_key_holder"
        assert "approver key of bob: alice cannot submit" in error["message"]
        (entry,) = await refusals(api)
        assert entry["actor"] == "alice" and entry["details"]["reason"] == "not-key-holder"
        assert entry["details"]["keyid"] == keys.tuf("bob").public_key.keyid
        view = await api.call("GET", f"/api/v1/proposals/{number}")
        assert view["approvers"] == [] and view["missing"] == 2  # nothing counted
        # bob submitting his own approval is counted.
        r = await submit(api, number, md, keys, "bob", who["bob"])
        assert r.status_code == 200, r.text
        assert r.json()["approvers"] == ["bob"]


async def test_the_uploader_cannot_approve_through_her_key_under_another_label(
    server_data: Path, keys: TufKeys, pki: Pki
) -> None:
    async with running_api(server_data, dt.datetime.now(dt.UTC)) as api:
        who = await tokens(api, "bob", "carol")
        number, md = await propose_crl(api, pki, who["carol"])  # carol proposes the CRL
        # carol signs with her key (labelled "Carol S", not "carol") and bob submits it.
        r = await submit(api, number, md, keys, "carol", who["bob"])
        assert r.status_code == 409, r.text
        assert "carol uploaded this release and cannot approve it" in r.json()["error"]["message"]
        # Nor may she submit it herself.
        r = await submit(api, number, md, keys, "carol", who["carol"])
        assert r.status_code == 409, r.text
        found = await refusals(api)
        assert [(e["actor"], e["details"]["reason"]) for e in found] == [
            ("bob", "uploader"),
            ("carol", "uploader"),
        ]
        view = await api.call("GET", f"/api/v1/proposals/{number}")
        assert view["approvers"] == [] and view["missing"] == 2
        # alice and bob approve; only their approvals count, and the CRL is published.
        for name in ("alice", "bob"):
            r = await submit(api, number, md, keys, name, who[name])
            assert r.status_code == 200, r.text
        published = await api.call("POST", f"/api/v1/proposals/{number}/publish")
        assert published["state"] == "published" and published["approvers"] == ["alice", "bob"]
