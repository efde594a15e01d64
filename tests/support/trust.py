"""TUF key material and repository set-up for tests (generated fixtures, never real secrets)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from chargeward.crypto.keys import Signer, generate_key
from chargeward.publish import ImageRepository, OnlineSigners
from chargeward.publish.roles import create_repository
from chargeward.trust.tuf_keys import TufSigner, tuf_key
from tests.support.fleet import TEST_PASSPHRASE, cli

ROOT_HOLDERS = ("ana", "ben", "cyd")
APPROVERS = ("alice", "bob", "carol")


def person_tokens(data: Path) -> dict[str, str]:
    """API tokens for alice and bob (approvers) and carol (who uploads)."""
    return {
        n: cli("token", "create", n, "--data-dir", str(data)).stdout.strip().rsplit(" ", 1)[-1]
        for n in ("alice", "bob", "carol")
    }


def _pass() -> bytes:
    return TEST_PASSPHRASE.encode()


@dataclass
class TufKeys:
    """Three root holders (2 of 3), three approvers (2 of 3), online snapshot/timestamp keys."""

    dir: Path
    signers: dict[str, Signer]

    @classmethod
    def create(cls, d: Path) -> TufKeys:
        d.mkdir(parents=True, exist_ok=True)
        names = [*ROOT_HOLDERS, *APPROVERS, "snapshot", "timestamp"]
        return cls(d, {n: generate_key(f"file:{d}/{n}.key", _pass) for n in names})

    def uri(self, name: str) -> str:
        return self.signers[name].uri

    def tuf(self, name: str) -> TufSigner:
        owner = None if name in ("snapshot", "timestamp") else name
        signer = self.signers[name]
        return TufSigner(signer, tuf_key(signer.public_key(), owner=owner))

    def add(self, name: str) -> Signer:
        self.signers[name] = generate_key(f"file:{self.dir}/{name}.key", _pass)
        return self.signers[name]

    def online(self) -> OnlineSigners:
        return OnlineSigners(snapshot=self.tuf("snapshot"), timestamp=self.tuf("timestamp"))

    def init_args(self, data_dir: Path, root_out: Path | None = None) -> list[str]:
        args = ["repo", "init", "--data-dir", str(data_dir)]
        for n in ROOT_HOLDERS:
            args += ["--root-key", f"{n}={self.uri(n)}"]
        for n in APPROVERS:
            args += ["--targets-key", f"{n}={self.uri(n)}"]
        args += ["--snapshot-key", self.uri("snapshot"), "--timestamp-key", self.uri("timestamp")]
        if root_out is not None:
            args += ["--root-out", str(root_out)]
        return args

    def init_cli(self, data_dir: Path, root_out: Path | None = None) -> None:
        """``chargeward repo init`` with 2-of-3 root and 2-of-3 approvers."""
        cli(*self.init_args(data_dir, root_out))

    def init_repo(self, directory: Path, now: dt.datetime) -> ImageRepository:
        """The same repository, made in-process (fast, for unit tests)."""
        repo = ImageRepository(directory)
        create_repository(
            repo,
            root_signers=[self.tuf(n) for n in ROOT_HOLDERS],
            root_threshold=2,
            approver_signers=[self.tuf(n) for n in APPROVERS],
            targets_threshold=2,
            online=self.online(),
            now=now,
        )
        repo.set_online_key_uris(
            {"snapshot": self.uri("snapshot"), "timestamp": self.uri("timestamp")}
        )
        return repo
