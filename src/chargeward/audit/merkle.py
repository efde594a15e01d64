"""RFC 6962 / RFC 9162 Merkle tree over stored perfect subtrees: roots, proofs, verification.

Pure and storage-agnostic: no database, no I/O.  The tree is kept as the hashes of its
*perfect subtrees*, keyed by ``(level, index)``: level 0 holds the leaf hashes and node
``(level, i)`` covers leaves ``[i * 2**level, (i + 1) * 2**level)``.  A perfect subtree never
changes once complete, so appending only adds rows (about two per leaf) and any tree size
ever reached can still be rebuilt: an incomplete right-edge subtree is folded from perfect
ones on demand.

Every operation first works out which keys it needs, fetches them with **one**
:meth:`NodeReader.get_many` call (O(log n) keys) and then assembles the answer, so a database
behind the reader answers a proof with a single query.

    >>> tree = MemoryTree()
    >>> for entry in (b"build", b"sbom", b"scan", b"sign"):
    ...     _ = tree.append(entry)
    >>> head = root(4, tree)
    >>> proof = inclusion_proof(2, 4, tree)
    >>> verify_inclusion(leaf_hash(b"scan"), 2, 4, proof, head)  # raises ProofError if bad
    >>> old = root(3, tree)
    >>> verify_consistency(3, 4, old, head, consistency_proof(3, 4, tree))

Verification (:func:`verify_inclusion`, :func:`verify_consistency`) follows RFC 9162 sections
2.1.3.2 and 2.1.4.2 step by step and raises :class:`ProofError`; it never returns a verdict.
A proof does not bind the tree size by itself: take size and root from a signed checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from chargeward.errors import ChargewardError, InvalidValue, TrustError

HASH_SIZE = 32  # SHA-256
# A tree of fewer than 2**64 leaves has proofs of at most 64 hashes (RFC 9162 section 2.1.3.1).
MAX_PROOF_HASHES = 64
MAX_TREE_SIZE = 2**64 - 1

Key = tuple[int, int]  # (level, index) of a perfect subtree
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = HASH() (RFC 9162 section 2.1.1)


class ProofError(TrustError):
    """An inclusion or consistency proof does not verify (or is malformed)."""


class TreeStorageError(ChargewardError):
    """The node store lacks a node that a tree of the requested size must have."""


@dataclass(frozen=True, slots=True)
class Node:
    """One stored perfect-subtree hash: a row ``(level, index, hash)``."""

    level: int
    index: int
    hash: bytes


class NodeReader(Protocol):
    """Read access to stored perfect-subtree hashes (a table keyed by ``(level, index)``)."""

    def get_many(self, keys: Sequence[Key]) -> Mapping[Key, bytes]:
        """The hashes of ``keys`` (missing keys may simply be absent from the result)."""
        ...


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)`` (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)`` (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): k in RFC 9162 section 2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


# -- which perfect subtrees a subtree of the RFC recursion is made of ---------------------------


def _perfect_keys(start: int, end: int) -> list[Key]:
    """Perfect subtrees covering ``D[start:end]``, a subtree of the RFC 9162 recursion.

    Such a subtree starts at a multiple of the largest power of two not above its length, so
    it is the perfect subtrees of the binary expansion of ``end - start``, largest first.
    """
    keys: list[Key] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start % (1 << level):
            raise InvalidValue(f"D[{start}:{end}] is not a subtree of the RFC 9162 tree")
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def _fold(keys: Sequence[Key], nodes: Mapping[Key, bytes]) -> bytes:
    """MTH of the subtree made of ``keys`` (largest first): MTH(D[n]) = MTH(D[0:k]) + MTH(D[k:n])
    with k the largest power of two (RFC 9162 section 2.1.1), i.e. a right fold."""
    acc = nodes[keys[-1]]
    for key in reversed(keys[:-1]):
        acc = node_hash(nodes[key], acc)
    return acc


def _fetch(reader: NodeReader, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """MTH of each ``D[start:end]`` in ``ranges``, after one batched read."""
    plans = [_perfect_keys(start, end) for start, end in ranges]
    wanted = list(dict.fromkeys(key for plan in plans for key in plan))
    if not wanted:
        return []
    nodes = reader.get_many(wanted)
    missing = [key for key in wanted if key not in nodes]
    if missing:
        raise TreeStorageError(f"node store lacks {len(missing)} node(s), first {missing[0]}")
    for key in wanted:
        if len(nodes[key]) != HASH_SIZE:
            raise TreeStorageError(f"node {key} is {len(nodes[key])} bytes, not {HASH_SIZE}")
    return [_fold(plan, nodes) for plan in plans]


def _check_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise InvalidValue(f"tree size {size} out of range")


# -- writing ------------------------------------------------------------------------------------


def append_nodes(size: int, data: bytes, reader: NodeReader) -> list[Node]:
    """The nodes to store when entry ``data`` becomes leaf number ``size``.

    The leaf hash plus each perfect subtree the leaf completes: one node, plus one per
    trailing 1 bit of ``size`` (two per append on average).
    """
    return append_batch(size, [data], reader)


def append_batch(size: int, entries: Sequence[bytes], reader: NodeReader) -> list[Node]:
    """The nodes to store when ``entries`` become leaves ``size``, ``size + 1``, ...

    Reads (in one batch) only the perfect subtrees of the current tree that the new leaves
    complete; everything else is computed here.  Nodes come out in creation order.
    """
    _check_size(size + len(entries))
    final = size + len(entries)
    # A root of the current tree's decomposition, (level, i) with i even, is needed only if
    # its right sibling completes within the batch: its parent ends at (i + 2) * 2**level.
    needed = [
        (level, (size >> level) - 1)
        for level in range(size.bit_length())
        if size >> level & 1 and final >= ((size >> level) + 1) << level
    ]
    known: dict[Key, bytes] = dict(reader.get_many(needed)) if needed else {}
    missing = [key for key in needed if key not in known]
    if missing:
        raise TreeStorageError(f"node store lacks {missing[0]} for a tree of size {size}")
    created: list[Node] = []
    for offset, data in enumerate(entries):
        index = size + offset
        acc = leaf_hash(data)
        created.append(Node(0, index, acc))
        known[(0, index)] = acc
        level = 0
        while index & 1:  # this node is a right child: its parent is now complete
            acc = node_hash(known[(level, index - 1)], acc)
            level, index = level + 1, index >> 1
            created.append(Node(level, index, acc))
            known[(level, index)] = acc
    return created


# -- reading: root and proofs -------------------------------------------------------------------


def root(size: int, reader: NodeReader) -> bytes:
    """MTH(D[size]) (RFC 9162 section 2.1.1): folds the ``popcount(size)`` perfect roots."""
    _check_size(size)
    if size == 0:
        return EMPTY_ROOT
    return _fetch(reader, [(0, size)])[0]


def _path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees whose MTH make up PATH(index, D[size]), leaf to root.

    RFC 9162 section 2.1.3.1: for n > 1 and k the largest power of two below n,
    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if m < k, and
    PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k]) otherwise; PATH(0, {d0}) = {}.
    """
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()  # descended root to leaf; the proof lists siblings leaf to root
    return ranges


def _subproof_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The subtrees whose MTH make up PROOF(old, D[new]) = SUBPROOF(old, D[new], true).

    RFC 9162 section 2.1.4.1: SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) =
    {MTH(D[m])}; for m < n and k the largest power of two below n,
    SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) if m <= k, and
    SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) otherwise.
    """
    ranges: list[tuple[int, int]] = []
    start, end, whole = 0, new, True
    while end != old:
        k = _split(end - start)
        if old - start <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, whole = start + k, False
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 section 2.1.3.1: sibling hashes, leaf to root."""
    _check_size(size)
    if not 0 <= index < size:
        raise InvalidValue(f"leaf index {index} is not in a tree of size {size}")
    return _fetch(reader, _path_ranges(index, size))


def consistency_proof(old: int, new: int, reader: NodeReader) -> list[bytes]:
    """PROOF(old, D[new]) of RFC 9162 section 2.1.4.1 (empty if ``old`` is 0 or ``new``)."""
    _check_size(new)
    if not 0 <= old <= new:
        raise InvalidValue(f"no consistency proof from size {old} to size {new}")
    if old == 0:
        return []
    return _fetch(reader, _subproof_ranges(old, new))


# -- verification (what a charger, an auditor or the offline verifier runs) ---------------------


def _check_hashes(proof: Sequence[bytes], *named: tuple[str, bytes]) -> None:
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofError(f"proof has {len(proof)} hashes, more than {MAX_PROOF_HASHES}")
    for name, value in named:
        if len(value) != HASH_SIZE:
            raise ProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")
    for n, value in enumerate(proof):
        if len(value) != HASH_SIZE:
            raise ProofError(f"proof hash {n} is {len(value)} bytes, not {HASH_SIZE}")


def _shift_until_odd(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift both until LSB(fn) is set or fn is 0 (RFC 9162 sections 2.1.3.2, 2.1.4.2)."""
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` puts leaf hash ``leaf`` at ``index`` in the
    tree of ``size`` leaves with root ``root_hash`` (RFC 9162 section 2.1.3.2)."""
    _check_hashes(proof, ("leaf hash", leaf), ("root hash", root_hash))
    if not 0 <= size <= MAX_TREE_SIZE or index < 0:
        raise ProofError(f"index {index} or tree size {size} out of range")
    if index >= size:  # step 1
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    fn, sn = index, size - 1  # step 2
    r = leaf  # step 3
    for p in proof:  # step 4
        if sn == 0:  # 4a
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            if not fn & 1:
                fn, sn = _shift_until_odd(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1  # 4c
    if sn != 0:  # step 5
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != root_hash:
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows that the tree (``new_size``,
    ``new_root``) extends the tree (``old_size``, ``old_root``) (RFC 9162 section 2.1.4.2).

    RFC 9162 defines proofs for 0 < old < new.  As in CT implementations, equal sizes need
    an empty proof and equal roots, and the empty tree (root ``SHA-256()``) precedes any tree
    with an empty proof.
    """
    _check_hashes(proof, ("old root", old_root), ("new root", new_root))
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ProofError(f"sizes {old_size} -> {new_size}: a log never shrinks")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise ProofError(f"a proof from size {old_size} to {new_size} must be empty")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("old root is not the root of the empty tree")
        if old_size == new_size and old_root != new_root:
            raise ProofError(f"two different roots for tree size {old_size}")
        return
    if not proof:  # step 1
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise ProofError("consistency proof is longer than the trees need")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                fn, sn = _shift_until_odd(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:  # step 7
        raise ProofError("consistency proof is shorter than the trees need")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")


# -- an in-memory store -------------------------------------------------------------------------


class MemoryTree:
    """Perfect-subtree hashes in memory (32 bytes a node in one ``bytearray`` per level).

    A :class:`NodeReader` for tests, benchmarks and the offline verifier, which rebuilds a
    log from its entries and compares roots:

        >>> tree = MemoryTree()
        >>> tree.extend([b"a", b"b", b"c"])
        >>> tree.size, root(3, tree) == root(3, tree)
        (3, True)
    """

    def __init__(self) -> None:
        self._levels: list[bytearray] = []
        self.size = 0

    def append(self, data: bytes) -> int:
        """Add one entry; returns its leaf index."""
        self.store(append_nodes(self.size, data, self))
        return self.size - 1

    def extend(self, entries: Iterable[bytes]) -> None:
        """Add entries in order (one read of existing nodes for the whole batch)."""
        self.store(append_batch(self.size, list(entries), self))

    def store(self, nodes: Iterable[Node]) -> None:
        """Keep nodes from :func:`append_nodes` / :func:`append_batch`, in their order."""
        for node in nodes:
            while len(self._levels) <= node.level:
                self._levels.append(bytearray())
            row = self._levels[node.level]
            if len(node.hash) != HASH_SIZE or node.index != len(row) // HASH_SIZE:
                raise TreeStorageError(f"node {node.level, node.index} is out of order")
            row += node.hash
            if node.level == 0:
                self.size += 1

    def get(self, level: int, index: int) -> bytes:
        """One node; ``KeyError`` if it is not stored."""
        row = self._levels[level] if 0 <= level < len(self._levels) else b""
        if not 0 <= index < len(row) // HASH_SIZE:
            raise KeyError((level, index))
        return bytes(row[index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def get_many(self, keys: Sequence[Key]) -> dict[Key, bytes]:
        found: dict[Key, bytes] = {}
        for level, index in keys:
            try:
                found[(level, index)] = self.get(level, index)
            except KeyError:
                continue
        return found
