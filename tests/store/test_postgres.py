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
