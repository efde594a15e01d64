"""The audit log's Merkle tree: RFC 6962 / RFC 9162 roots, proofs and proof verification.

Three independent anchors: the worked examples of RFC 6962 section 2.1.3 (proofs spelt with
the RFC's named hashes a..l), the published test vectors of the Certificate Transparency
reference implementation, and a from-scratch recursive reference written below straight from
the RFC 9162 definitions (MTH, PATH, SUBPROOF) that must agree with the stored-subtree code
for every proof of every tree up to 64 leaves.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Mapping, Sequence

import pytest

from chargeward.audit.merkle import (
    EMPTY_ROOT,
    Key,
    MemoryTree,
    Node,
    ProofError,
    TreeStorageError,
    append_batch,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

MAX_N = 64

# -- an independent reference, from the RFC 9162 section 2.1 definitions ------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Reference:
    """MTH, PATH and PROOF computed recursively over the leaf data (RFC 9162 section 2.1)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)

    @staticmethod
    def _k(n: int) -> int:
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    @functools.cache  # noqa: B019 (one small instance per test module)
    def mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return _sha(b"")
        if n == 1:
            return _sha(b"\x00" + self.leaves[start])
        k = self._k(n)
        return _sha(b"\x01" + self.mth(start, start + k) + self.mth(start + k, end))

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = self._k(n)
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [self.mth(start, end)]
        k = self._k(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, whole), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]

    def root(self, n: int) -> bytes:
        return self.mth(0, n)

    def inclusion(self, index: int, n: int) -> list[bytes]:
        return self.path(index, 0, n)

    def consistency(self, m: int, n: int) -> list[bytes]:
        return self.subproof(m, 0, n, True)


LEAVES = [f"audit entry {i}".encode() for i in range(MAX_N)]
REF = Reference(LEAVES)


@pytest.fixture(scope="module")
def tree() -> MemoryTree:
    t = MemoryTree()
    for entry in LEAVES:
        t.append(entry)
    return t


class CountingReader:
    """A NodeReader that counts batched reads and keys read."""

    def __init__(self, inner: MemoryTree) -> None:
        self.inner = inner
        self.calls = 0
        self.keys = 0

    def get_many(self, keys: Sequence[Key]) -> Mapping[Key, bytes]:
        self.calls += 1
        self.keys += len(keys)
        return self.inner.get_many(keys)


def h(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


# -- RFC 6962 section 2.1.3: the worked examples -------------------------------------------------


class TestRfc6962Examples:
    """The seven-leaf tree d0..d6 and its named nodes (RFC 6962 section 2.1.3)."""

    d = [f"d{i}".encode() for i in range(7)]
    a, b, c, d_, e, f = (_sha(b"\x00" + x) for x in d[:6])
    j = _sha(b"\x00" + d[6])
    g = _sha(b"\x01" + a + b)
    h_ = _sha(b"\x01" + c + d_)
    i = _sha(b"\x01" + e + f)
    k = _sha(b"\x01" + g + h_)
    l_ = _sha(b"\x01" + i + j)
    hash7 = _sha(b"\x01" + k + l_)

    @pytest.fixture
    def seven(self) -> MemoryTree:
        t = MemoryTree()
        t.extend(self.d)
        return t

    def test_root_of_the_seven_leaf_tree(self, seven: MemoryTree) -> None:
        assert root(7, seven) == self.hash7

    def test_inclusion_proofs_of_every_leaf(self, seven: MemoryTree) -> None:
        expected = {
            0: [self.b, self.h_, self.l_],  # "the audit path for d0 is [b, h, l]"
            1: [self.a, self.h_, self.l_],
            2: [self.d_, self.g, self.l_],
            3: [self.c, self.g, self.l_],  # "the audit path for d3 is [c, g, l]"
            4: [self.f, self.j, self.k],  # "the audit path for d4 is [f, j, k]"
            5: [self.e, self.j, self.k],
            6: [self.i, self.k],  # "the audit path for d6 is [i, k]"
        }
        for index, path in expected.items():
            assert inclusion_proof(index, 7, seven) == path, index
            verify_inclusion(leaf_hash(self.d[index]), index, 7, path, self.hash7)

    def test_consistency_proofs_with_the_earlier_trees(self, seven: MemoryTree) -> None:
        hash0 = _sha(b"\x01" + self.g + self.c)  # 3 leaves
        hash1 = self.k  # 4 leaves
        hash2 = _sha(b"\x01" + self.k + self.i)  # 6 leaves
        assert [root(3, seven), root(4, seven), root(6, seven)] == [hash0, hash1, hash2]
        cases = [
            (3, hash0, [self.c, self.d_, self.g, self.l_]),  # PROOF(3, D[7]) = [c, d, g, l]
            (4, hash1, [self.l_]),  # PROOF(4, D[7]) = [l]
            (6, hash2, [self.i, self.j, self.k]),  # PROOF(6, D[7]) = [i, j, k]
        ]
        for old, old_root, proof in cases:
            assert consistency_proof(old, 7, seven) == proof, old
            verify_consistency(old, 7, old_root, self.hash7, proof)


# -- the Certificate Transparency reference implementation's vectors ----------------------------

CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = [  # (leaf index, tree size, audit path)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


class TestCertificateTransparencyVectors:
    @pytest.fixture
    def ct(self) -> MemoryTree:
        t = MemoryTree()
        t.extend(CT_LEAVES)
        return t

    def test_the_vectors_agree_with_the_from_scratch_reference(self) -> None:
        ref = Reference(CT_LEAVES)
        assert [ref.root(n).hex() for n in range(1, 9)] == CT_ROOTS
        for index, size, path in CT_PATHS:
            assert [p.hex() for p in ref.inclusion(index, size)] == path
        for old, new, proof in CT_CONSISTENCY:
            assert [p.hex() for p in ref.consistency(old, new)] == proof

    def test_roots_of_every_size(self, ct: MemoryTree) -> None:
        assert (
            root(0, ct)
            == EMPTY_ROOT
            == h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        )
        assert [root(n, ct).hex() for n in range(1, 9)] == CT_ROOTS

    @pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
    def test_inclusion_proofs(self, ct: MemoryTree, index: int, size: int, path: list[str]) -> None:
        assert [p.hex() for p in inclusion_proof(index, size, ct)] == path
        verify_inclusion(
            leaf_hash(CT_LEAVES[index]), index, size, [h(p) for p in path], h(CT_ROOTS[size - 1])
        )

    @pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
    def test_consistency_proofs(self, ct: MemoryTree, old: int, new: int, proof: list[str]) -> None:
        assert [p.hex() for p in consistency_proof(old, new, ct)] == proof
        verify_consistency(
            old, new, h(CT_ROOTS[old - 1]), h(CT_ROOTS[new - 1]), [h(p) for p in proof]
        )


# -- every proof of every small tree -------------------------------------------------------------


def _flip(value: bytes, at: int = 0) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]


def _rejects(check: Callable[[], None]) -> bool:
    try:
        check()
    except ProofError:
        return True
    return False


@pytest.mark.parametrize("n", range(1, MAX_N + 1))
def test_roots_and_proofs_agree_with_the_reference(tree: MemoryTree, n: int) -> None:
    assert root(n, tree) == REF.root(n)
    for index in range(n):
        assert inclusion_proof(index, n, tree) == REF.inclusion(index, n), index
    for old in range(1, n + 1):
        assert consistency_proof(old, n, tree) == REF.consistency(old, n), old


@pytest.mark.parametrize("n", range(1, MAX_N + 1))
def test_every_inclusion_proof_verifies_and_every_tampered_one_is_rejected(n: int) -> None:
    head = REF.root(n)
    for index in range(n):
        leaf = leaf_hash(LEAVES[index])
        proof = REF.inclusion(index, n)
        verify_inclusion(leaf, index, n, proof, head)

        def rejects(
            leaf: bytes = leaf,
            index: int = index,
            size: int = n,
            head: bytes = head,
            proof: Sequence[bytes] = proof,
        ) -> bool:
            return _rejects(lambda: verify_inclusion(leaf, index, size, proof, head))

        for at, node in enumerate(proof):  # a changed proof hash, first or last byte
            for byte in (0, 31):
                assert rejects(proof=[*proof[:at], _flip(node, byte), *proof[at + 1 :]])
        if proof:
            assert rejects(proof=proof[:-1])
            assert rejects(proof=proof[1:])
        assert rejects(proof=[*proof, head])
        assert rejects(proof=[*proof, proof[-1] if proof else leaf])
        assert rejects(leaf=_flip(leaf))
        assert rejects(leaf=leaf_hash(LEAVES[(index + 1) % MAX_N]))
        assert rejects(head=_flip(head, 31))
        for other in {index - 1, index + 1, index ^ 1, 0, n - 1, n} - {index}:
            assert rejects(index=other)  # out of range, or another position in the tree
        for size in {n - 1, n + 1, 2 * n} - {0, index}:
            if index < size <= MAX_N:  # a claim about another tree, with that tree's root
                assert rejects(size=size, head=REF.root(size))
        assert rejects(index=-1)


@pytest.mark.parametrize("n", range(1, MAX_N + 1))
def test_every_consistency_proof_verifies_and_every_tampered_one_is_rejected(n: int) -> None:
    new_root = REF.root(n)
    for old in range(1, n + 1):
        old_root = REF.root(old)
        proof = REF.consistency(old, n)
        verify_consistency(old, n, old_root, new_root, proof)

        def rejects(
            old: int = old,
            new: int = n,
            r1: bytes = old_root,
            r2: bytes = new_root,
            proof: Sequence[bytes] = proof,
        ) -> bool:
            return _rejects(lambda: verify_consistency(old, new, r1, r2, proof))

        for at, node in enumerate(proof):
            for byte in (0, 31):
                assert rejects(proof=[*proof[:at], _flip(node, byte), *proof[at + 1 :]])
        if proof:
            assert rejects(proof=proof[:-1])
            assert rejects(proof=proof[1:])
            assert rejects(proof=proof[::-1]) or proof == proof[::-1]
        assert rejects(proof=[*proof, new_root])
        assert rejects(proof=[old_root, *proof])
        assert rejects(r1=_flip(old_root))
        assert rejects(r2=_flip(new_root, 31))
        assert rejects(r1=new_root) or old == n
        for other in {old - 1, old + 1} - {0, old}:  # another old tree, with its own root
            if other <= n:
                accepted = not rejects(old=other, r1=REF.root(other))
                assert accepted == (proof == REF.consistency(other, n)), other
            else:
                assert rejects(old=other, r1=REF.root(n))
        for other in {n - 1, n + 1} - {old - 1}:
            if old <= other <= MAX_N:
                accepted = not rejects(new=other, r2=REF.root(other))
                assert accepted == (proof == REF.consistency(old, other)), other


def test_the_proof_alone_does_not_bind_the_tree_size() -> None:
    """Why size and root must come together from a signed checkpoint: the path of leaf 0 in a
    5-leaf tree has the same shape in a 6-leaf tree, so the claim (size 6, 5-leaf root)
    passes the RFC 9162 algorithm.  No signed checkpoint ever pairs size 6 with that root."""
    proof = REF.inclusion(0, 5)
    verify_inclusion(leaf_hash(LEAVES[0]), 0, 6, proof, REF.root(5))
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(LEAVES[0]), 0, 6, proof, REF.root(6))


# -- edges, malformed input, storage ------------------------------------------------------------


def test_trivial_consistency_cases() -> None:
    assert consistency_proof(0, 5, MemoryTree()) == []
    verify_consistency(0, 5, EMPTY_ROOT, REF.root(5), [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(5, 5, REF.root(5), REF.root(5), [])
    for bad in (
        lambda: verify_consistency(0, 5, REF.root(1), REF.root(5), []),
        lambda: verify_consistency(0, 5, EMPTY_ROOT, REF.root(5), [REF.root(5)]),
        lambda: verify_consistency(5, 5, REF.root(5), REF.root(4), []),
        lambda: verify_consistency(5, 5, REF.root(5), REF.root(5), [REF.root(5)]),
        lambda: verify_consistency(5, 4, REF.root(5), REF.root(4), REF.consistency(4, 5)),
        lambda: verify_consistency(3, 5, REF.root(3), REF.root(5), []),
    ):
        with pytest.raises(ProofError):
            bad()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: verify_inclusion(b"short", 0, 1, [], REF.root(1)), "leaf hash is 5 bytes"),
        (lambda: verify_inclusion(REF.root(1), 0, 1, [], b""), "root hash is 0 bytes"),
        (lambda: verify_inclusion(REF.root(1), 0, 2, [b"x" * 33], REF.root(2)), "proof hash 0"),
        (lambda: verify_inclusion(REF.root(1), 0, 2, [REF.root(1)] * 65, REF.root(2)), "65"),
        (lambda: verify_inclusion(REF.root(1), 1, 1, [], REF.root(1)), "not below"),
        (lambda: verify_inclusion(REF.root(1), 0, 2**64, [], REF.root(1)), "out of range"),
        (lambda: verify_consistency(2, 3, REF.root(2), b"", []), "new root is 0 bytes"),
        (lambda: verify_consistency(3, 2, REF.root(3), REF.root(2), []), "never shrinks"),
        (lambda: verify_consistency(3, 5, REF.root(3), REF.root(5), []), "is empty"),
    ],
)
def test_malformed_proofs_are_refused_with_a_reason(call: Callable[[], None], message: str) -> None:
    with pytest.raises(ProofError, match=message):
        call()


def test_proof_requests_outside_the_tree_are_programming_errors(tree: MemoryTree) -> None:
    for bad in (
        lambda: inclusion_proof(5, 5, tree),
        lambda: inclusion_proof(-1, 5, tree),
        lambda: consistency_proof(6, 5, tree),
        lambda: root(-1, tree),
    ):
        with pytest.raises(ValueError):  # noqa: PT011 (message checked below)
            bad()
    with pytest.raises(TreeStorageError, match="lacks"):
        root(MAX_N + 1, tree)
    with pytest.raises(TreeStorageError, match="lacks"):
        inclusion_proof(0, MAX_N + 1, tree)


def test_each_operation_is_one_batched_read_of_logarithmically_many_nodes(
    tree: MemoryTree,
) -> None:
    for n in range(1, MAX_N + 1):
        bound = 2 * n.bit_length()
        for op in (
            lambda r, n=n: root(n, r),
            *(lambda r, i=i, n=n: inclusion_proof(i, n, r) for i in range(n)),
            *(lambda r, m=m, n=n: consistency_proof(m, n, r) for m in range(1, n)),
        ):
            reader = CountingReader(tree)
            op(reader)
            assert reader.calls <= 1
            assert reader.keys <= bound, n


def test_appends_create_the_leaf_and_each_completed_subtree() -> None:
    t = MemoryTree()
    assert t.append(b"e0") == 0
    created = append_batch(1, [b"e1"], t)
    assert created == [
        Node(0, 1, leaf_hash(b"e1")),
        Node(1, 0, _sha(b"\x01" + leaf_hash(b"e0") + leaf_hash(b"e1"))),
    ]
    t.store(created)
    # leaf 7 completes (1, 3), (2, 1) and (3, 0): four nodes; leaf 8 only itself.
    t.extend([b"e2", b"e3", b"e4", b"e5", b"e6"])
    assert [(x.level, x.index) for x in append_batch(7, [b"e7"], t)] == [
        (0, 7),
        (1, 3),
        (2, 1),
        (3, 0),
    ]
    # 2n - popcount(n) nodes for n leaves: about two per append.
    big = MemoryTree()
    big.extend(LEAVES)
    stored = sum(len(big.get_many([(lvl, i) for i in range(MAX_N)])) for lvl in range(7))
    assert stored == 2 * MAX_N - 1


def test_batched_appends_equal_single_appends(tree: MemoryTree) -> None:
    rnd = random.Random(6962)
    for _ in range(20):
        t, size = MemoryTree(), 0
        while size < MAX_N:
            batch = LEAVES[size : size + rnd.randint(1, 9)]
            t.extend(batch)
            size += len(batch)
        assert [root(n, t) for n in range(MAX_N + 1)] == [root(n, tree) for n in range(MAX_N + 1)]


def test_a_batch_reads_only_the_subtrees_it_completes() -> None:
    t = MemoryTree()
    t.extend(LEAVES[:6])  # perfect roots (2, 0) and (1, 2)
    seen: list[Sequence[Key]] = []

    class Spy:
        def get_many(self, keys: Sequence[Key]) -> Mapping[Key, bytes]:
            seen.append(list(keys))
            return t.get_many(keys)

    append_batch(6, [b"x"], Spy())
    append_batch(6, [b"x", b"y"], Spy())
    assert seen == [[(1, 2), (2, 0)]]  # one leaf onto 6 completes nothing: no read


def test_memory_tree_refuses_nodes_out_of_order() -> None:
    t = MemoryTree()
    with pytest.raises(TreeStorageError, match="out of order"):
        t.store([Node(0, 1, bytes(32))])
    with pytest.raises(KeyError):
        t.get(0, 0)
