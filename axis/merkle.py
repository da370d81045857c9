"""Merkle trees as RFC 6962 (Certificate Transparency) defines them: a checkpoint signs the root
over a range of audit events, and one event's inclusion is a path of O(log n) hashes.

``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``; a tree of ``n``
leaves splits at the largest power of two below ``n``. Built level by level, that is: pair the
nodes of a level left to right and carry an odd last node up unchanged. The empty tree's root is
SHA-256 of nothing. Proofs are checked with RFC 9162's algorithm (section 2.1.3.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Tree:
    """Every level of the tree over ``leaves`` (their leaf hashes given), kept for proofs: about
    two hashes per leaf."""

    def __init__(self, leaves: Iterable[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            self.levels.append(above)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def proof(self, index: int) -> list[bytes]:
        """The inclusion path of leaf ``index``, nearest sibling first."""
        if not 0 <= index < self.size:
            raise IndexError(f"no leaf {index} in a tree of {self.size}")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):  # an odd last node has no sibling here: it is carried up
                path.append(level[sibling])
            index >>= 1
        return path


def root_of(leaves: Iterable[bytes]) -> bytes:
    """The root over ``leaves`` (leaf hashes), holding O(log n) hashes rather than the tree."""
    stack: list[tuple[int, bytes]] = []  # (height, hash) of complete subtrees, left to right
    for leaf in leaves:
        height, value = 0, leaf
        while stack and stack[-1][0] == height:
            value = node_hash(stack.pop()[1], value)
            height += 1
        stack.append((height, value))
    if not stack:
        return EMPTY_ROOT
    value = stack.pop()[1]
    while stack:
        value = node_hash(stack.pop()[1], value)
    return value


def included(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """Whether ``path`` proves leaf hash ``leaf`` is leaf ``index`` of the tree of ``size`` leaves
    whose root is ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn, value = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            value = node_hash(value, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and value == root
