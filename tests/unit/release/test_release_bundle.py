"""Release bundles: building, verifying, and refusing every kind of damaged bundle."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import certificate_pem
from chargeward.errors import (
    BadSignature,
    BundleError,
    ConfigError,
    Conflict,
    IntegrityError,
    RevokedCertificate,
    UntrustedCertificate,
)
from chargeward.release.bundle import (
    Manifest,
    ManifestImage,
    build_bundle,
    read_manifest,
    verify_bundle,
)
from chargeward.release.image import canonical_json, pack_image

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from conftest import Pki

Entry = tuple[tarfile.TarInfo, bytes]


def build(pki: Pki, payload: Path, out: Path, **overrides: Any) -> Manifest:
    args: dict[str, Any] = {
        "version": "1.2.0",
        "security_version": 3,
        "hardware_models": ["AC22"],
        "signer": pki.signer,
        "signing_certificate": pki.signing_cert,
    }
    args.update(overrides)
    return build_bundle(payload, out, **args)


@pytest.fixture
def bundle(tmp_path: Path, pki: Pki, payload: Path) -> Path:
    out = tmp_path / "release.cwb"
    build(pki, payload, out)
    return out


def read_members(bundle: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(bundle, "r:") as tar:
        for member in tar.getmembers():
            fh = tar.extractfile(member)
            assert fh is not None
            out[member.name] = fh.read()
    return out


def regular(name: str, data: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def write_tar(path: Path, entries: list[Entry]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def rewrite(
    bundle: Path,
    out: Path,
    *,
    replace: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
    extra: list[Entry] | None = None,
) -> Path:
    members = read_members(bundle)
    members.update(replace or {})
    entries = [regular(name, data) for name, data in members.items() if name not in drop]
    return write_tar(out, entries + (extra or []))


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> bytes:
    data = json.loads(read_members(bundle)["manifest.json"])
    edit(data)
    return canonical_json(data)


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# --- building and verifying -------------------------------------------------------------


def test_build_then_verify(tmp_path: Path, pki: Pki, payload: Path) -> None:
    out = tmp_path / "release.cwb"
    now = dt.datetime.now(dt.UTC).replace(microsecond=123456)
    manifest = build(pki, payload, out, hardware_models=["AC22", "AC11"], notes="Fixes", now=now)

    workdir = tmp_path / "work"
    verified = verify_bundle(out, [pki.root], workdir=workdir, now=now)

    reference = tmp_path / "reference.cwfw"
    header, _ = pack_image(
        payload,
        reference,
        component="main",
        version="1.2.0",
        security_version=3,
        hardware_models=["AC11", "AC22"],
    )
    [image] = verified.images
    assert image.file == workdir / "images" / "main.cwfw"
    assert image.file.read_bytes() == reference.read_bytes()
    assert image.header == header
    assert image.header.payload_sha256 == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert image.sha256 == hashlib.sha256(reference.read_bytes()).hexdigest()
    assert image.length == reference.stat().st_size
    assert image.signature == manifest.images[0].signature
    assert verified.manifest == manifest
    assert verified.signing_certificate_pem == certificate_pem(pki.signing_cert)
    raw = read_members(out)["manifest.json"]
    assert verified.manifest_sha256 == hashlib.sha256(raw).hexdigest() == manifest.release_id
    assert read_manifest(out) == manifest
    assert (workdir / "manifest.json").read_bytes() == raw
    assert manifest.created_at == now.replace(microsecond=0)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bundle_layout_and_manifest_format(tmp_path: Path, pki: Pki, payload: Path) -> None:
    out = tmp_path / "release.cwb"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    build(pki, payload, out, now=now)
    with tarfile.open(out, "r:") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "images/main.cwfw",
        "manifest.json",
        "signing-certificate.pem",
    ]
    for m in members:
        assert (m.type, m.mode, m.uid, m.gid) == (tarfile.REGTYPE, 0o644, 0, 0)
        assert m.mtime == int(now.timestamp())
    files = read_members(out)
    manifest = json.loads(files["manifest.json"])
    assert canonical_json(manifest) == files["manifest.json"]
    image = manifest["images"][0]
    assert manifest == {
        "schema": "chargeward.bundle/1",
        "release": {
            "version": "1.2.0",
            "security_version": 3,
            "hardware_models": ["AC22"],
            "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "notes": "",
        },
        "images": [
            {
                "component": "main",
                "path": "images/main.cwfw",
                "sha256": hashlib.sha256(files["images/main.cwfw"]).hexdigest(),
                "length": len(files["images/main.cwfw"]),
                "signature": image["signature"],
            }
        ],
        "signing_certificate": "signing-certificate.pem",
    }
    assert base64.b64decode(image["signature"], validate=True)[0] == 0x30  # DER SEQUENCE
    assert files["signing-certificate.pem"].decode() == certificate_pem(pki.signing_cert)


class MemoSigner:
    """Returns one signature per digest, to take ECDSA's randomness out of a comparison."""

    def __init__(self, inner: Signer) -> None:
        self._inner = inner
        self._memo: dict[bytes, bytes] = {}

    @property
    def uri(self) -> str:
        return self._inner.uri

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        return self._memo.setdefault(digest, self._inner.sign_digest(digest))


def test_source_date_epoch_makes_builds_reproducible(
    tmp_path: Path, pki: Pki, payload: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    signer = MemoSigner(pki.signer)
    first = build(pki, payload, tmp_path / "a.cwb", signer=signer)
    second = build(pki, payload, tmp_path / "b.cwb", signer=signer)
    assert first.created == "2023-11-14T22:13:20Z"
    assert (tmp_path / "a.cwb").read_bytes() == (tmp_path / "b.cwb").read_bytes()
    assert first == second
    third = build(pki, payload, tmp_path / "c.cwb")
    assert third.images[0].signature != first.images[0].signature
    assert third.images[0].sha256 == first.images[0].sha256


def test_bad_source_date_epoch_is_a_config_error(
    tmp_path: Path, pki: Pki, payload: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        build(pki, payload, tmp_path / "a.cwb")


# --- refusing tampered or untrusted content ---------------------------------------------


def test_tampered_image_byte(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    image = bytearray(read_members(bundle)["images/main.cwfw"])
    image[-100] ^= 0x01
    bad = rewrite(bundle, tmp_path / "bad.cwb", replace={"images/main.cwfw": bytes(image)})
    workdir = tmp_path / "work"
    with pytest.raises(IntegrityError, match="SHA-256"):
        verify_bundle(bad, [pki.root], workdir=workdir)
    assert files_under(workdir) == []


def test_tampered_image_with_recomputed_digest_fails_the_signature(
    tmp_path: Path, pki: Pki, bundle: Path
) -> None:
    image = bytearray(read_members(bundle)["images/main.cwfw"])
    image[-1] ^= 0xFF

    def fix_digest(m: dict[str, Any]) -> None:
        m["images"][0]["sha256"] = hashlib.sha256(image).hexdigest()

    bad = rewrite(
        bundle,
        tmp_path / "bad.cwb",
        replace={
            "images/main.cwfw": bytes(image),
            "manifest.json": edit_manifest(bundle, fix_digest),
        },
    )
    with pytest.raises(BadSignature, match=r"images/main\.cwfw"):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


@pytest.mark.parametrize(
    ("field", "value"),
    [("security_version", 4), ("version", "1.3.0"), ("hardware_models", ["AC11", "AC22"])],
)
def test_manifest_claims_must_match_the_signed_header(
    tmp_path: Path, pki: Pki, bundle: Path, field: str, value: object
) -> None:
    def change(m: dict[str, Any]) -> None:
        m["release"][field] = value

    bad = rewrite(
        bundle, tmp_path / "bad.cwb", replace={"manifest.json": edit_manifest(bundle, change)}
    )
    workdir = tmp_path / "work"
    with pytest.raises(IntegrityError, match=field):
        verify_bundle(bad, [pki.root], workdir=workdir)
    assert files_under(workdir) == []


def test_signature_of_another_image_is_refused(
    tmp_path: Path, pki: Pki, bundle: Path, payload: Path
) -> None:
    other = tmp_path / "other.cwb"
    build(pki, payload, other, version="1.2.1")
    stolen = json.loads(read_members(other)["manifest.json"])["images"][0]["signature"]

    def swap(m: dict[str, Any]) -> None:
        m["images"][0]["signature"] = stolen

    bad = rewrite(
        bundle, tmp_path / "bad.cwb", replace={"manifest.json": edit_manifest(bundle, swap)}
    )
    with pytest.raises(BadSignature):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


def test_untrusted_root(tmp_path: Path, other_pki: Pki, bundle: Path) -> None:
    workdir = tmp_path / "work"
    with pytest.raises(UntrustedCertificate, match="not issued by an installed root"):
        verify_bundle(bundle, [other_pki.root], workdir=workdir)
    assert files_under(workdir) == []


def test_swapped_certificate_from_another_manufacturer(
    tmp_path: Path, pki: Pki, other_pki: Pki, bundle: Path
) -> None:
    pem = certificate_pem(other_pki.signing_cert).encode()
    bad = rewrite(bundle, tmp_path / "bad.cwb", replace={"signing-certificate.pem": pem})
    with pytest.raises(BadSignature):
        verify_bundle(bad, [pki.root, other_pki.root], workdir=tmp_path / "work")


def test_revoked_and_expired_signing_certificates(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    with pytest.raises(RevokedCertificate):
        verify_bundle(
            bundle,
            [pki.root],
            workdir=tmp_path / "w1",
            revoked_serials=frozenset({pki.signing_cert.serial_number}),
        )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=6 * 365)
    with pytest.raises(UntrustedCertificate, match="not valid at this time"):
        verify_bundle(bundle, [pki.root], workdir=tmp_path / "w2", now=later)


# --- refusing malformed archives --------------------------------------------------------


BAD_MEMBERS: list[tuple[str, Callable[[dict[str, bytes]], list[Entry]], str]] = [
    ("traversal", lambda m: [regular("../evil", b"x")], r"'\.\./evil'.*traversal"),
    ("nested traversal", lambda m: [regular("images/../../evil", b"x")], "traversal"),
    ("absolute", lambda m: [regular("/tmp/evil", b"x")], r"'/tmp/evil'.*absolute path"),
    (
        "symlink",
        lambda m: [special("images/main.cwfw", tarfile.SYMTYPE, "/etc/passwd")],
        r"'images/main.cwfw'.*symbolic link",
    ),
    (
        "hardlink",
        lambda m: [special("images/main.cwfw", tarfile.LNKTYPE, "manifest.json")],
        r"'images/main.cwfw'.*hard link",
    ),
    ("device", lambda m: [special("images/x.cwfw", tarfile.CHRTYPE)], "character device"),
    ("directory", lambda m: [special("images", tarfile.DIRTYPE)], r"'images'.*directory"),
    (
        "duplicate",
        lambda m: [regular("manifest.json", m["manifest.json"])],
        r"'manifest.json'.*appears twice",
    ),
    ("unexpected", lambda m: [regular("README.txt", b"hi")], r"'README.txt'.*unexpected"),
    (
        "unlisted image",
        lambda m: [regular("images/extra.cwfw", m["images/main.cwfw"])],
        r"'images/extra.cwfw'.*not listed",
    ),
]


@pytest.mark.parametrize(
    ("extra", "message"), [case[1:] for case in BAD_MEMBERS], ids=[c[0] for c in BAD_MEMBERS]
)
def test_malformed_members_are_refused(
    tmp_path: Path,
    pki: Pki,
    bundle: Path,
    extra: Callable[[dict[str, bytes]], list[Entry]],
    message: str,
) -> None:
    members = read_members(bundle)
    entries = [regular(name, data) for name, data in members.items()]
    replaced = {info.name for info, _ in extra(members) if not info.isreg()}
    entries = [e for e in entries if e[0].name not in replaced] + extra(members)
    bad = write_tar(tmp_path / "bad.cwb", entries)
    workdir = tmp_path / "sub" / "work"
    with pytest.raises(BundleError, match=message):
        verify_bundle(bad, [pki.root], workdir=workdir)
    with pytest.raises(BundleError, match=message):
        read_manifest(bad)
    assert not (tmp_path / "evil").exists()
    assert files_under(workdir) == []


def test_oversized_manifest(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    huge = b" " * (1024 * 1024 + 1)
    bad = rewrite(bundle, tmp_path / "bad.cwb", replace={"manifest.json": huge})
    with pytest.raises(BundleError, match=r"'manifest.json'.*1048577 bytes exceeds"):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


def test_oversized_certificate(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    huge = certificate_pem(pki.signing_cert).encode() * 30
    bad = rewrite(bundle, tmp_path / "bad.cwb", replace={"signing-certificate.pem": huge})
    with pytest.raises(BundleError, match=r"'signing-certificate.pem'.*exceeds"):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


def test_image_size_cap(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    with pytest.raises(BundleError, match=r"'images/main.cwfw'.*exceeds the limit of 1000"):
        verify_bundle(bundle, [pki.root], workdir=tmp_path / "work", max_image_bytes=1000)


def test_two_certificates_are_refused(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    pem = (certificate_pem(pki.signing_cert) + certificate_pem(pki.root)).encode()
    bad = rewrite(bundle, tmp_path / "bad.cwb", replace={"signing-certificate.pem": pem})
    with pytest.raises(BundleError, match="exactly one"):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


@pytest.mark.parametrize(
    "missing", ["manifest.json", "signing-certificate.pem", "images/main.cwfw"]
)
def test_missing_member(tmp_path: Path, pki: Pki, bundle: Path, missing: str) -> None:
    bad = rewrite(bundle, tmp_path / "bad.cwb", drop=(missing,))
    with pytest.raises(BundleError, match=f"'{missing}'.*(missing|not in the bundle)"):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


@pytest.mark.parametrize(
    "content",
    [b"", os.urandom(4096), b"\0" * 1024, b"not a tar at all"],
    ids=["empty", "random", "zeros", "text"],
)
def test_not_a_tar(tmp_path: Path, pki: Pki, content: bytes) -> None:
    bad = tmp_path / "bad.cwb"
    bad.write_bytes(content)
    with pytest.raises(BundleError):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


def test_compressed_bundle_is_refused(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    bad = tmp_path / "bad.cwb"
    bad.write_bytes(gzip.compress(bundle.read_bytes()))
    with pytest.raises(BundleError, match="not an uncompressed tar"):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")


def test_truncated_bundle(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    bad = tmp_path / "bad.cwb"
    bad.write_bytes(bundle.read_bytes()[:100_000])
    workdir = tmp_path / "work"
    with pytest.raises(BundleError, match=r"'images/main\.cwfw'"):
        verify_bundle(bad, [pki.root], workdir=workdir)
    assert files_under(workdir) == []


# --- files and conflicts ----------------------------------------------------------------


def test_existing_output_is_never_overwritten(tmp_path: Path, pki: Pki, payload: Path) -> None:
    out = tmp_path / "release.cwb"
    out.write_bytes(b"precious")
    with pytest.raises(Conflict, match="refusing to overwrite"):
        build(pki, payload, out)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["firmware.bin", "pki", "release.cwb"]


def test_verify_never_overwrites_the_workdir(tmp_path: Path, pki: Pki, bundle: Path) -> None:
    workdir = tmp_path / "work"
    first = verify_bundle(bundle, [pki.root], workdir=workdir)
    before = {p: p.read_bytes() for p in files_under(workdir)}
    with pytest.raises(Conflict, match="already exists"):
        verify_bundle(bundle, [pki.root], workdir=workdir)
    assert {p: p.read_bytes() for p in files_under(workdir)} == before
    assert first.images[0].file.exists()


def test_key_must_match_certificate(
    tmp_path: Path, pki: Pki, other_pki: Pki, payload: Path
) -> None:
    out = tmp_path / "release.cwb"
    with pytest.raises(ConfigError, match="does not match the signing certificate"):
        build(pki, payload, out, signer=other_pki.signer)
    assert not out.exists()


def test_ca_certificate_cannot_sign_a_release(tmp_path: Path, pki: Pki, payload: Path) -> None:
    with pytest.raises(ConfigError, match="is a CA certificate"):
        build(
            pki, payload, tmp_path / "r.cwb", signer=pki.root_signer, signing_certificate=pki.root
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"version": "1.2.0\n"}, "version"),
        ({"version": ""}, "version"),
        ({"security_version": -1}, "security version"),
        ({"hardware_models": []}, "hardware model"),
        ({"hardware_models": ["AC22", "AC22"]}, "twice"),
        ({"component": "../main"}, "component"),
        ({"notes": "x" * 20000}, "notes"),
    ],
)
def test_invalid_release_metadata(
    tmp_path: Path, pki: Pki, payload: Path, overrides: dict[str, Any], message: str
) -> None:
    out = tmp_path / "r.cwb"
    with pytest.raises(BundleError, match=message):
        build(pki, payload, out, **overrides)
    assert not out.exists()


def test_empty_or_missing_payload(tmp_path: Path, pki: Pki) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(BundleError, match="empty"):
        build(pki, empty, tmp_path / "a.cwb")
    with pytest.raises(ConfigError, match="cannot read firmware payload"):
        build(pki, tmp_path / "absent.bin", tmp_path / "b.cwb")


# --- the manifest on its own ------------------------------------------------------------


def _manifest() -> Manifest:
    return Manifest(
        version="1.2.0",
        security_version=3,
        hardware_models=("AC22",),
        created="2026-11-21T10:00:00Z",
        notes="",
        images=(
            ManifestImage(
                component="main",
                path="images/main.cwfw",
                sha256="ab" * 32,
                length=10,
                signature=base64.b64encode(b"0" * 70).decode(),
            ),
        ),
        signing_certificate_path="signing-certificate.pem",
    )


def test_manifest_roundtrip() -> None:
    manifest = _manifest()
    raw = manifest.to_json()
    assert Manifest.from_json(raw) == manifest
    assert manifest.image("main").length == 10
    assert manifest.created_at == dt.datetime(2026, 11, 21, 10, tzinfo=dt.UTC)


def _mutate(edit: Callable[[dict[str, Any]], None]) -> bytes:
    data = json.loads(_manifest().to_json())
    edit(data)
    return canonical_json(data)


MANIFEST_DEFECTS: list[tuple[str, Callable[[], bytes], str]] = [
    (
        "pretty",
        lambda: json.dumps(json.loads(_manifest().to_json()), indent=2).encode(),
        "canonical",
    ),
    (
        "duplicate key",
        lambda: _manifest().to_json().replace(b'{"images"', b'{"schema":"x","images"'),
        "repeats",
    ),
    ("unknown key", lambda: _mutate(lambda m: m.update(extra=1)), "unknown keys 'extra'"),
    ("missing key", lambda: _mutate(lambda m: m["release"].pop("notes")), "lacks 'notes'"),
    ("schema", lambda: _mutate(lambda m: m.update(schema="chargeward.bundle/2")), "schema"),
    ("path", lambda: _mutate(lambda m: m["images"][0].update(path="images/../x.cwfw")), "path"),
    ("created", lambda: _mutate(lambda m: m["release"].update(created="yesterday")), "created"),
    ("bool", lambda: _mutate(lambda m: m["release"].update(security_version=True)), "security"),
    ("float", lambda: _mutate(lambda m: m["images"][0].update(length=10.0)), "length"),
    ("no images", lambda: _mutate(lambda m: m.update(images=[])), "images"),
    ("signature", lambda: _mutate(lambda m: m["images"][0].update(signature="@@")), "base64"),
    (
        "cert path",
        lambda: _mutate(lambda m: m.update(signing_certificate="/etc/x")),
        "signing_cert",
    ),
    ("nan", lambda: _manifest().to_json().replace(b'"length":10', b'"length":NaN'), "NaN"),
    ("not json", lambda: b"{", "not valid JSON"),
    ("not utf-8", lambda: b"\xff\xfe{}", "UTF-8"),
    ("not object", lambda: b"[]", "JSON object"),
    ("too big", lambda: b" " * (1024 * 1024 + 1), "limit"),
]


@pytest.mark.parametrize(
    ("raw", "message"), [c[1:] for c in MANIFEST_DEFECTS], ids=[c[0] for c in MANIFEST_DEFECTS]
)
def test_manifest_is_strict(raw: Callable[[], bytes], message: str) -> None:
    with pytest.raises(BundleError, match=message):
        Manifest.from_json(raw())


# --- several images, and the supply-chain documents ---------------------------------------

SBOM = b'{"bomFormat":"CycloneDX","specVersion":"1.6"}'
REPORT = b'{"decision":"pass","findings":[]}'


def test_a_multi_image_release_signs_and_verifies_each_image(
    tmp_path: Path, pki: Pki, payload: Path
) -> None:
    modem = tmp_path / "modem.bin"
    modem.write_bytes(b"modem firmware " * 1000)
    out = tmp_path / "multi.cwb"
    manifest = build(pki, {"main": payload, "modem": modem}, out)
    assert [i.component for i in manifest.images] == ["main", "modem"]
    verified = verify_bundle(out, [pki.root], workdir=tmp_path / "work")
    assert [i.component for i in verified.images] == ["main", "modem"]
    assert verified.images[1].file.read_bytes().endswith(modem.read_bytes())
    assert verified.images[0].signature != verified.images[1].signature
    # An image swapped for another component's (same signer) fails on its own digest.
    members = read_members(out)
    swapped = rewrite(
        out,
        tmp_path / "swapped.cwb",
        replace={"images/modem.cwfw": members["images/main.cwfw"]},
    )
    with pytest.raises(IntegrityError, match=r"images/modem.cwfw"):
        verify_bundle(swapped, [pki.root], workdir=tmp_path / "w2")


def test_attestations_are_bound_to_the_release_id(tmp_path: Path, pki: Pki, payload: Path) -> None:
    out = tmp_path / "attested.cwb"
    manifest = build(
        pki, payload, out, attestations={"sbom.cdx.json": SBOM, "vulnerability-report.json": REPORT}
    )
    listed = {a.name: a.sha256 for a in manifest.attestations}
    assert listed == {
        "sbom.cdx.json": hashlib.sha256(SBOM).hexdigest(),
        "vulnerability-report.json": hashlib.sha256(REPORT).hexdigest(),
    }
    plain = build(pki, payload, tmp_path / "plain.cwb")
    assert "attestations" not in json.loads(plain.to_json())  # older encoding unchanged
    verified = verify_bundle(out, [pki.root], workdir=tmp_path / "work")
    assert dict(verified.attestations) == {
        "sbom.cdx.json": SBOM,
        "vulnerability-report.json": REPORT,
    }
    assert (tmp_path / "work" / "sbom.cdx.json").read_bytes() == SBOM
    assert read_manifest(out) == manifest


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"replace": {"sbom.cdx.json": SBOM.replace(b"1.6", b"1.5")}},
            IntegrityError,
            "'sbom.cdx.json': SHA-256 differs from the manifest",
        ),
        ({"drop": ("sbom.cdx.json",)}, BundleError, "listed in the manifest but not in"),
        (
            {"extra": [regular("vex.openvex.json", b"{}")]},
            BundleError,
            "'vex.openvex.json': unexpected member, not listed",
        ),
        ({"extra": [regular("notes.txt", b"hi")]}, BundleError, "unexpected member"),
    ],
)
def test_tampered_attestations_are_refused(
    tmp_path: Path,
    pki: Pki,
    payload: Path,
    change: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    out = tmp_path / "attested.cwb"
    build(pki, payload, out, attestations={"sbom.cdx.json": SBOM})
    bad = rewrite(out, tmp_path / "bad.cwb", **change)
    with pytest.raises(error, match=message):
        verify_bundle(bad, [pki.root], workdir=tmp_path / "work")
    assert files_under(tmp_path / "work") == []


def test_unknown_attestation_names_and_too_many_images_are_refused(
    tmp_path: Path, pki: Pki, payload: Path
) -> None:
    with pytest.raises(BundleError, match=r"attestation 'notes\.json' is not one of"):
        build(pki, payload, tmp_path / "a.cwb", attestations={"notes.json": b"{}"})
    many = {f"c{i}": payload for i in range(17)}
    with pytest.raises(BundleError, match="1-16 images"):
        build(pki, many, tmp_path / "b.cwb")
    assert not (tmp_path / "a.cwb").exists() and not (tmp_path / "b.cwb").exists()
