"""RFC 6962 Merkle trees: roots and inclusion proofs as the RFC defines them, checked with
RFC 9162's algorithm; one event's inclusion among a million is a path of 20 hashes."""

from __future__ import annotations

import hashlib
import math

from axis.merkle import EMPTY_ROOT, Tree, included, leaf_hash, node_hash, root_of


def _mth(data: list[bytes]) -> bytes:
    """The RFC's recursive definition, written out."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return leaf_hash(data[0])
    split = 1 << (len(data) - 1).bit_length() - 1
    return node_hash(_mth(data[:split]), _mth(data[split:]))


def _path(index: int, data: list[bytes]) -> list[bytes]:
    if len(data) <= 1:
        return []
    split = 1 << (len(data) - 1).bit_length() - 1
    if index < split:
        return [*_path(index, data[:split]), _mth(data[split:])]
    return [*_path(index - split, data[split:]), _mth(data[:split])]


def test_roots_and_paths_follow_the_rfc_for_every_size_up_to_70() -> None:
    for size in range(71):
        data = [n.to_bytes(4, "big") for n in range(size)]
        tree = Tree(leaf_hash(d) for d in data)
        assert tree.root() == _mth(data) == root_of(leaf_hash(d) for d in data)
        for index in range(size):
            path = tree.proof(index)
            assert path == _path(index, data)
            assert included(leaf_hash(data[index]), index, size, path, tree.root())
            assert not included(leaf_hash(b"forged"), index, size, path, tree.root())
            if path:
                assert not included(leaf_hash(data[index]), index, size, path[:-1], tree.root())
    assert Tree([]).root() == root_of([]) == EMPTY_ROOT


def test_one_event_among_a_million_is_proved_by_twenty_hashes() -> None:
    size = 1_000_000
    tree = Tree(leaf_hash(n.to_bytes(4, "big")) for n in range(size))
    for index in (0, 123_456, size - 1):
        path = tree.proof(index)
        assert len(path) <= math.ceil(math.log2(size)) == 20
        assert included(leaf_hash(index.to_bytes(4, "big")), index, size, path, tree.root())
