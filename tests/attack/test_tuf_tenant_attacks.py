"""The public TUF repository must not undo tenant isolation (issue 26, point 4; ADR 0026).

A release locked to customer fleet-a is published beside a release for every customer, by the
real repository code with 2-of-3 approver signatures, and served by the real API over HTTP on
127.0.0.1.  Then, as an attacker would:

- anonymous GETs of every metadata file the repository has and of every target path (also
  fleet-a's, had the attacker guessed it): nothing answered names fleet-a, its version or its
  image's SHA-256, and its role and image are 404;
- fleet-b's station, with its own valid Basic credentials: 404 for fleet-a's role and image;
- fleet-a's station: a plain ``tuf.ngclient.Updater`` (not Chargeward's agent) with a fetcher
  that adds its Basic header verifies and downloads fleet-a's image; the same client without
  credentials still verifies the fleet-wide release.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import pytest
from tuf.api.exceptions import DownloadError, RepositoryError
from tuf.api.metadata import Metadata, Snapshot, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto.pki import certificate_pem
from chargeward.errors import TransportError, TrustError
from chargeward.model.targets import tenant_role
from chargeward.publish import ImageRepository
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.server.auth import tokens
from chargeward.server.fleet import station_registry
from chargeward.server.runtime import add_manufacturer_root
from chargeward.server.store.tables import Station
from chargeward.trust.approval import Approval, label_accounts, signed_files
from chargeward.trust.review import fetch_published, review_files
from tests.support.accounts_api import AccountsApi
from tests.support.api_app import running_api
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.served_api import served_api
from tests.support.trust import TufKeys

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
A, B = "fleet-a", "fleet-b"
A_VERSION = "7.3.1"
SIG = base64.b64encode(b"OCPP signature").decode()
PASSWORDS = {"CP-A1": "a-station-password-1", "CP-B1": "b-station-password-1"}
PUBLIC_IMAGE = b"firmware for every customer\n" * 64
A_IMAGE = b"firmware for fleet-a only\n" * 64
A_SHA = hashlib.sha256(A_IMAGE).hexdigest()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TufKeys:
    return TufKeys.create(tmp_path_factory.mktemp("tenant-tuf-keys"))


def _targets(version: str, customer: str | None, image: bytes) -> dict[str, object]:
    return dict(
        release_targets(
            version=version,
            security_version=2,
            models=["AC22"],
            release_class="security",
            customer=customer,
            images=[ImageFacts("main", hashlib.sha256(image).hexdigest(), len(image), SIG)],
        )
    )


def publish_two_releases(env: AccountsApi, keys: TufKeys, work: Path) -> dict[str, str]:
    """Releases 1.1.0 (every customer) and 7.3.1 (fleet-a), each approved by alice and bob."""
    repo = keys.init_repo(env.state.data_dir / "tuf", NOW)
    paths = {}
    for name, version, customer, image in (
        ("public", "1.1.0", None, PUBLIC_IMAGE),
        ("a", A_VERSION, A, A_IMAGE),
    ):
        blob = work / f"{name}.bin"
        blob.write_bytes(image)
        env.state.blobs.put(blob, hashlib.sha256(image).hexdigest(), len(image))
        additions = _targets(version, customer, image)
        paths[name] = next(iter(additions))
        files = repo.propose_files(additions, now=NOW)  # type: ignore[arg-type]
        approvals = []
        for who in ("alice", "bob"):
            signer = keys.tuf(who)
            top = signer.sign(files.targets.signed_bytes)
            roles = {n: signer.sign(md.signed_bytes).signature for n, md in files.roles.items()}
            approvals.append(Approval(top.keyid, who, top.signature, who, roles))
        root = repo.root().signed
        top_md, roles_md = signed_files(
            root, files.targets, files.roles, approvals, label_accounts(root)
        )
        repo.publish_targets(top_md, keys.online(), now=NOW, roles=roles_md)
    return paths


@dataclass
class Served:
    url: str
    paths: dict[str, str]
    root: bytes


@pytest.fixture
def served(tmp_path: Path, keys: TufKeys) -> Iterator[Served]:
    async def seed(env: AccountsApi) -> dict[str, str]:
        paths = publish_two_releases(env, keys, tmp_path)
        async with env.state.db.session() as s:
            for sid, customer in (("CP-A1", A), ("CP-B1", B)):
                await station_registry.register_station(
                    s, sid, actor="m", model="AC22", password=PASSWORDS[sid], now=NOW
                )
                row = await s.get(Station, sid)
                assert row is not None
                row.customer = customer
        return paths

    with served_api(tmp_path / "srv", seed) as (url, paths):
        root = (tmp_path / "srv" / "tuf" / "metadata" / "1.root.json").read_bytes()
        yield Served(url, paths, root)


def _basic(station: str) -> dict[str, str]:
    token = base64.b64encode(f"{station}:{PASSWORDS[station]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 (loopback)
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _secrets_absent(body: bytes) -> None:
    for secret in (A, A_VERSION, A_SHA):
        assert secret.encode() not in body, secret


def _every_metadata_name(served: Served) -> list[str]:
    status, ts = _get(f"{served.url}/tuf/metadata/timestamp.json")
    assert status == 200
    snap_version = Metadata.from_bytes(ts).signed.snapshot_meta.version  # type: ignore[attr-defined]
    status, snap = _get(f"{served.url}/tuf/metadata/{snap_version}.snapshot.json")
    assert status == 200
    snapshot = Metadata[Snapshot].from_bytes(snap).signed
    names = ["timestamp.json", "root.json", "1.root.json", f"{snap_version}.snapshot.json"]
    for name, meta in snapshot.meta.items():
        names += [name, f"{meta.version}.{name}"]
        names += [f"{v}.{name}" for v in range(1, meta.version)]
    return names


def test_anonymous_caller_learns_nothing_of_a_customers_release(served: Served) -> None:
    names = _every_metadata_name(served)
    role = tenant_role(A)
    assert f"{role}.json" in names  # the role exists (under its opaque name) ...
    answered = 0
    for name in names:
        status, body = _get(f"{served.url}/tuf/metadata/{name}")
        if role in name:
            assert status == 404, name  # ... but is not served to anyone anonymous
        _secrets_absent(body)
        answered += status == 200
    assert answered >= 5  # root, timestamp, snapshot, targets: the public part still works
    a_path = served.paths["a"]
    directory, _, base = a_path.rpartition("/")
    for path in (f"{directory}/{A_SHA}.{base}", f"firmware/AC22/{A_VERSION}/{A_SHA}.main.cwfw"):
        status, body = _get(f"{served.url}/tuf/targets/{path}")
        assert status == 404, path
        _secrets_absent(body.replace(path.encode(), b""))  # beyond the caller's own URL
    pub_dir, _, pub_base = served.paths["public"].rpartition("/")
    public_sha = hashlib.sha256(PUBLIC_IMAGE).hexdigest()
    status, body = _get(f"{served.url}/tuf/targets/{pub_dir}/{public_sha}.{pub_base}")
    assert (status, body) == (200, PUBLIC_IMAGE)


def test_another_customers_station_gets_404_for_the_role_and_the_image(served: Served) -> None:
    role = tenant_role(A)
    a_dir, _, a_base = served.paths["a"].rpartition("/")
    role_url = f"{served.url}/tuf/metadata/{role}.json"
    versioned = f"{served.url}/tuf/metadata/1.{role}.json"
    image_url = f"{served.url}/tuf/targets/{a_dir}/{A_SHA}.{a_base}"
    wrong_password = {"Authorization": "Basic " + base64.b64encode(b"CP-A1:guess").decode()}
    for headers in (_basic("CP-B1"), wrong_password, {"Authorization": "Bearer cws_nope"}):
        for url in (role_url, versioned, image_url):
            status, body = _get(url, headers)
            assert status == 404, (url, headers)
            _secrets_absent(body)
    for url in (versioned, image_url):  # the customer's own station is served
        status, body = _get(url, _basic("CP-A1"))
        assert status == 200, url
    assert _get(image_url, _basic("CP-A1"))[1] == A_IMAGE


class BasicFetcher(FetcherInterface):
    """A minimal python-tuf fetcher (urllib) that sends a station's Basic credentials."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def _fetch(self, url: str) -> Iterator[bytes]:
        status, body = _get(url, self.headers)
        if status != 200:
            from tuf.api.exceptions import DownloadHTTPError

            raise DownloadHTTPError(f"{url}: HTTP {status}", status)
        return iter([body])


def _updater(served: Served, work: Path, headers: dict[str, str]) -> Updater:
    work.mkdir()
    updater = Updater(
        metadata_dir=str(work),
        metadata_base_url=f"{served.url}/tuf/metadata/",
        target_base_url=f"{served.url}/tuf/targets/",
        target_dir=str(work),
        fetcher=BasicFetcher(headers),
        bootstrap=served.root,
    )
    updater.refresh()
    return updater


def test_a_plain_tuf_client_of_the_customers_station_verifies_its_release(
    served: Served, tmp_path: Path
) -> None:
    mine = _updater(served, tmp_path / "a", _basic("CP-A1"))
    info = mine.get_targetinfo(served.paths["a"])
    assert info is not None and info.hashes["sha256"] == A_SHA
    assert info.custom["customer"] == A
    downloaded = mine.download_target(info, str(tmp_path / "a" / "image"))
    assert Path(downloaded).read_bytes() == A_IMAGE
    assert mine.get_targetinfo(served.paths["public"]) is not None  # and the fleet-wide one
    # anonymous and fleet-b's station: the fleet-wide release verifies, fleet-a's is not there
    for who, headers in (("anon", {}), ("b", _basic("CP-B1"))):
        other = _updater(served, tmp_path / who, headers)
        assert other.get_targetinfo(served.paths["public"]) is not None
        with pytest.raises((DownloadError, RepositoryError)):
            other.get_targetinfo(served.paths["a"])
        for f in (tmp_path / who).rglob("*.json"):
            _secrets_absent(f.read_bytes())


# -- approvers: a proposal must not hide anything in a tenant role they sign (ADR 0026) -------


def _files(version: str, customer: str | None, image: bytes) -> dict[str, TargetFile]:
    return cast("dict[str, TargetFile]", _targets(version, customer, image))


@dataclass
class ServedRepo:
    url: str
    root: bytes
    token: str
    tuf_dir: Path


@pytest.fixture
def served_repo(tmp_path: Path, keys: TufKeys) -> Iterator[ServedRepo]:
    async def seed(env: AccountsApi) -> str:
        publish_two_releases(env, keys, tmp_path)
        return env.admin_token

    with served_api(tmp_path / "srv", seed) as (url, token):
        tuf_dir = tmp_path / "srv" / "tuf"
        yield ServedRepo(url, (tuf_dir / "metadata" / "1.root.json").read_bytes(), token, tuf_dir)


def test_an_approver_refuses_a_target_slipped_into_a_tenant_role(served_repo: ServedRepo) -> None:
    """The server proposes fleet-a's release 7.4.0 and slips fleet-a's 6.6.6 into fleet-a's
    role file beside it: the approver reviews 7.4.0 only, so the CLI's review refuses
    before any key is used (issue 26 point 4)."""
    with httpx.Client(headers={"Authorization": f"Bearer {served_repo.token}"}) as client:
        published = fetch_published(f"{served_repo.url}/tuf/", served_repo.root, client=client)
    role = tenant_role(A)
    assert set(published.roles) == {role} and len(published.roles[role].targets) == 1
    repo = ImageRepository(served_repo.tuf_dir)
    shown = _files("7.4.0", A, b"fleet-a 7.4.0\n")
    honest = repo.propose_files(shown, now=NOW)
    review = review_files(honest.targets, honest.roles, published, shown, now=NOW)
    assert review.changed == [] and review.roles[role].added == tuple(shown)
    assert review.roles[role].customers == (A,)

    hidden = _files("6.6.6", A, b"fleet-a downgrade\n")
    sneaky = repo.propose_files({**shown, **hidden}, now=NOW)
    with pytest.raises(TrustError, match=r"adds tenants/.*6\.6\.6.*not part of this release"):
        review_files(sneaky.targets, sneaky.roles, published, shown, now=NOW)
    # the same slipped into the role file of a proposal whose top-level targets are honest
    forged = Metadata[Targets].from_bytes(honest.roles[role].to_bytes())
    forged.signed.targets.update(hidden)
    with pytest.raises(TrustError, match="not part of this release"):
        review_files(honest.targets, {role: forged}, published, shown, now=NOW)
    # a role file left out, or a tenant delegation with other keys, is refused too
    with pytest.raises(TrustError, match=f"lacks the role file of {role}"):
        review_files(honest.targets, {}, published, shown, now=NOW)
    weak = Metadata[Targets].from_bytes(honest.targets.to_bytes())
    assert weak.signed.delegations is not None and weak.signed.delegations.roles is not None
    weak.signed.delegations.roles[role].threshold = 1
    with pytest.raises(TrustError, match="changes the delegations"):
        review_files(weak, honest.roles, published, shown, now=NOW)


def test_an_approver_without_a_permitted_token_cannot_review_tenant_roles(
    served_repo: ServedRepo,
) -> None:
    with (
        httpx.Client() as anonymous,
        pytest.raises(TransportError, match="cannot read the published tenant role"),
    ):
        fetch_published(f"{served_repo.url}/tuf/", served_repo.root, client=anonymous)


# -- the approval API: an approval must sign every tenant role file of the proposal ----------


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


async def test_an_approval_without_valid_tenant_role_signatures_is_refused(
    server_data: Path, keys: TufKeys, pki: Pki
) -> None:
    """fleet-a's role is published; a CRL proposal re-signs it.  An approval that signs only
    the top-level targets, signs a role with the wrong bytes, or signs a role the proposal
    does not change is refused (422) and not counted; whole approvals publish both files."""
    start = dt.datetime.now(dt.UTC)
    async with running_api(server_data, start) as api:
        repo = api.state.repository
        files = repo.propose_files(_files(A_VERSION, A, A_IMAGE), now=start)
        approvals = []
        for who in ("alice", "bob"):
            signer = keys.tuf(who)
            top = signer.sign(files.targets.signed_bytes)
            sigs = {n: signer.sign(md.signed_bytes).signature for n, md in files.roles.items()}
            approvals.append(Approval(top.keyid, who, top.signature, who, sigs))
        root = repo.root().signed
        top_md, roles_md = signed_files(
            root, files.targets, files.roles, approvals, label_accounts(root)
        )
        repo.publish_targets(top_md, keys.online(), now=start, roles=roles_md)
        role = tenant_role(A)

        headers: dict[str, dict[str, str]] = {"alice": {}}  # running_api's client acts as alice
        async with api.db.session() as s:
            for name in ("bob", "carol"):
                token = await tokens.create_token(s, name, actor="test", now=start)
                headers[name] = {"Authorization": f"Bearer {token}"}
        der = pki.crl([pki.signing_cert.serial_number], now=start)
        r = await api.client.post(
            "/api/v1/repository/revocations",
            content=der,
            headers={**headers["carol"], "Content-Type": "application/pkix-crl"},
        )
        assert r.status_code == 201, r.text
        number = r.json()["id"]
        view = await api.call("GET", f"/api/v1/proposals/{number}")
        assert set(view["roles"]) == {role}
        md = Metadata[Targets].from_bytes(view["metadata"].encode())
        role_md = Metadata[Targets].from_bytes(view["roles"][role].encode())
        alice = keys.tuf("alice")
        top = alice.sign(md.signed_bytes)
        good = alice.sign(role_md.signed_bytes).signature
        other = tenant_role(B)
        for roles, why in (
            ({}, f"lacks a signature over the proposal's {role}"),
            ({role: top.signature}, ""),  # the top-level signature is not one over the role
            ({role: alice.sign(b"something else").signature}, ""),
            ({role: good, other: good}, f"a signature for {other}"),
        ):
            body = {"keyid": top.keyid, "signature": top.signature, "roles": roles}
            r = await api.client.post(f"/api/v1/proposals/{number}/approvals", json=body)
            assert r.status_code == 422, (roles, r.text)
            assert why in r.json()["error"]["message"]
        view = await api.call("GET", f"/api/v1/proposals/{number}")
        assert view["approvers"] == [] and view["missing"] == 2
        for name in ("alice", "bob"):
            signer = keys.tuf(name)
            body = {
                "keyid": signer.public_key.keyid,
                "signature": signer.sign(md.signed_bytes).signature,
                "roles": {role: signer.sign(role_md.signed_bytes).signature},
            }
            await api.call(
                "POST", f"/api/v1/proposals/{number}/approvals", json=body, headers=headers[name]
            )
        published = await api.call("POST", f"/api/v1/proposals/{number}/publish")
        assert published["state"] == "published"
        assert repo.role_versions() == {role: 2}
        [listed] = repo.delegated(role).signed.targets.values()
        assert listed.hashes["sha256"] == A_SHA
