"""What is particular to the PostgreSQL store (the contract suite holds it to the rest)."""

from __future__ import annotations

import pytest

from axis.errors import StoreError
from axis.store.postgres import PostgresStore, translate
from axis.store.sqlite import append_event

AT = "2026-11-21T09:00:00+00:00"


def test_a_rolled_back_write_leaves_no_gap_in_the_chain(postgres_url: str) -> None:
    """Sequences are not transactional: the chain's numbers are taken inside the transaction."""
    store = PostgresStore(postgres_url)
    try:
        append = lambda c: append_event(c, "test.event", "subject", AT)  # noqa: E731

        def append_then_fail(c: object) -> None:
            append(c)
            raise StoreError("store.conflict", "refused after the event was written")

        store.committer.run(append)
        with pytest.raises(StoreError):
            store.committer.run(append_then_fail)
        store.committer.run(append)
        assert [e.seq for e in store.events()] == [1, 2]
        assert store.verify_chain().events == 2
    finally:
        store.close()


def test_two_stores_on_one_database_see_one_migrated_schema(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)  # a second node: nothing applied twice
    first.close()
    second.close()


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT 1 FROM agencies WHERE organ_id = ?", "SELECT 1 FROM agencies WHERE organ_id = %s"),
        ("INSERT OR IGNORE INTO packages (sha256, data) VALUES (?, ?)",
         "INSERT INTO packages (sha256, data) VALUES (%s, %s) ON CONFLICT DO NOTHING"),
        ("INSERT INTO deliveries (message_id) VALUES (?)", "INSERT INTO deliveries (message_id) VALUES (%s) RETURNING id"),
    ],
)
def test_the_sqlite_statements_are_translated(sqlite: str, postgres: str) -> None:
    assert translate(sqlite) == postgres


def test_a_large_package_is_kept_and_read_a_piece_at_a_time_and_damage_is_never_sent(postgres_url: str) -> None:
    from axis.spool import Incoming
    from axis.store.postgres import CHUNK

    store = PostgresStore(postgres_url)
    try:
        data = bytes(range(256)) * (CHUNK // 256 * 2 + 10)  # three pieces
        package = Incoming.of(data)
        assert store.blobs.keep(package) is None and store.blobs.keep(package) is None  # kept once
        rows = store._rows("SELECT n, length(data) FROM package_chunks WHERE sha256 = ? ORDER BY n", (package.sha256,))
        assert [tuple(r) for r in rows] == [(0, CHUNK), (1, CHUNK), (2, len(data) - 2 * CHUNK)]
        opened = store.blobs.open(package.sha256)
        assert not isinstance(opened, bytes) and b"".join(opened) == data  # type: ignore[arg-type]
        assert store.blobs.get(package.sha256) == data
        store.committer.run(
            lambda c: c.execute("UPDATE package_chunks SET data = ? WHERE sha256 = ? AND n = 1", (b"forged", package.sha256))
        )
        for read in (store.blobs.open, store.blobs.get):
            with pytest.raises(StoreError) as refused:
                read(package.sha256)
            assert refused.value.code == "store.blob_corrupt"
    finally:
        store.close()
