"""The SQLite store: migrations, blobs, the event chain, and every delivery state transition."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from axis.errors import StoreError
from axis.store import Agency, NewMessage, SQLiteStore, schema
from axis.store.committer import connect
from axis.store.events import ChainReport
from axis.store.sqlite import append_event

T0 = 1_800_000_000.0
AT = "2026-11-21T09:00:00+07:00"
SENDER, RECIPIENT, OTHER = "000.00.00.G22", "000.00.00.H41", "000.00.00.H14"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "data")
    for organ_id in (SENDER, RECIPIENT, OTHER):
        opened.add_agency(Agency(organ_id, "qcvn102", f"agency {organ_id}", AT))
    yield opened
    opened.close()


def message(recipients: tuple[str, ...] = (RECIPIENT,), priority: int = 0) -> NewMessage:
    return NewMessage(
        id=str(uuid.uuid4()),
        kind="document",
        sender=SENDER,
        document_id=f"{SENDER},2026/11/21,{uuid.uuid4().hex[:6]}/VPCP",
        sha256="ab" * 32,
        size=100,
        recipients=recipients,
        accepted_at=AT,
        priority=priority,
    )


def test_migrations_are_recorded_once_and_reopening_keeps_data(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "data")
    first.add_agency(Agency(SENDER, "qcvn102", "VPCP", AT))
    first.close()
    second = SQLiteStore(tmp_path / "data")
    assert second.agency(SENDER) is not None
    rows = connect(second.path).execute("SELECT name FROM _sqlite_migrations").fetchall()
    assert [r[0] for r in rows] == [
        "0001_registry_messages_deliveries_events",
        "0002_message_digest_due_date_event_subjects",
        "0003_vxp_credentials",
        "0004_inline_packages_registry_version",
        "0005_fewer_random_index_writes",
        "0006_receipt_bytes_kept_once",
        "0007_vxp_sources_no_replay_cache",
        "0008_statuses_keyed_by_the_document_sender",
        "0009_leases_owned_by_a_node",
    ]
    assert connect(second.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    second.close()


def _store_before(directory: Path, migration: str) -> sqlite3.Connection:
    """A store's database with every migration before ``migration`` applied, as an older axis left it."""
    directory.mkdir()
    old = connect(directory / "axis.sqlite3")
    schema.migrations.apply(Database(old), stop_before=migration)
    return old


def test_migration_0005_keeps_the_event_chain_and_its_guards(tmp_path: Path) -> None:
    """A store made before 0005 (events.hash UNIQUE, deliveries_by_message) keeps every event,
    its order and its hashes; the log stays append-only and a trail is still found by subject."""
    old = _store_before(tmp_path / "data", "0005_fewer_random_index_writes")
    heads = [append_event(old, "test.event", f"subject-{n}", T0 + n, n=n) for n in range(3)]
    assert sorted(r[1] for r in old.execute("PRAGMA index_list(events)")) == [
        "events_by_subject",
        "sqlite_autoindex_events_1",
    ]
    old.close()
    store = SQLiteStore(tmp_path / "data")  # opening applies 0005
    try:
        assert store.verify_chain() == ChainReport(3, heads[-1])
        assert [(e["kind"], e["n"]) for e in store.trail("subject-1")] == [("test.event", 1)]
        writer = connect(store.path)
        assert [r[1] for r in writer.execute("PRAGMA index_list(events)")] == ["events_by_subject"]
        assert "deliveries_by_message" not in {r[1] for r in writer.execute("PRAGMA index_list(deliveries)")}
        for change in ("UPDATE events SET content = '{}' WHERE seq = 2", "DELETE FROM events WHERE seq = 2"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                writer.execute(change)
        writer.close()
    finally:
        store.close()


def test_migration_0006_keeps_each_receipt_readable(tmp_path: Path) -> None:
    """Receipts stored with their XML in ``receipts`` (before 0006) read back byte for byte after
    it, from ``packages`` where the XML is now kept once."""
    old = _store_before(tmp_path / "data", "0006_receipt_bytes_kept_once")
    m = message()
    old.execute(
        "INSERT INTO messages (id, kind, sender, document_id, sha256, size, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (m.id, m.kind, m.sender, m.document_id, m.sha256, m.size, m.accepted_at),
    )
    xmls = [b"<Receipt>accepted</Receipt>", b"<Receipt>delivered</Receipt>", b"<Receipt>delivered</Receipt>"]
    for kind, xml in zip(("accepted", "delivered", "delivered"), xmls, strict=True):
        old.execute(
            "INSERT INTO receipts (message_id, kind, recipient, xml, created_at) VALUES (?, ?, ?, ?, ?)",
            (m.id, kind, None if kind == "accepted" else RECIPIENT, xml, AT),
        )
    old.close()
    store = SQLiteStore(tmp_path / "data")
    try:
        assert [r[2] for r in store.receipts(m.id)] == xmls
        assert [r[0] for r in store.receipts(m.id)] == ["accepted", "delivered", "delivered"]
    finally:
        store.close()


def test_migration_0007_keeps_vxp_credentials_and_drops_the_replay_cache(tmp_path: Path) -> None:
    """A VXP system registered before 0007 still authenticates (any source address); the replay
    cache, which refused the SDK's ordinary repeated signatures, is gone."""
    old = _store_before(tmp_path / "data", "0007_vxp_sources_no_replay_cache")
    old.execute("INSERT INTO agencies (organ_id, form, name, created_at) VALUES (?, 'qcvn102', 'VPCP', ?)", (SENDER, AT))
    old.execute(
        "INSERT INTO endpoints (name, mode, token_hash, status, created_at) VALUES ('qlvb', 'pull', 'h', 'active', ?)", (AT,)
    )
    old.execute("INSERT INTO endpoint_agencies (endpoint_id, organ_id) VALUES (1, ?)", (SENDER,))
    old.execute("INSERT INTO vxp_credentials (system_id, endpoint_id, sealed_secret, role) VALUES ('SYS', 1, x'00', 'admin')")
    old.execute("INSERT INTO vxp_replays (signature, seen_at) VALUES ('ab', 1.0)")
    old.close()
    store = SQLiteStore(tmp_path / "data")
    try:
        found = store.vxp_credential("SYS")
        assert found is not None
        endpoint, credential = found
        assert (endpoint.agencies, credential.role, credential.sources) == ((SENDER,), "admin", ())
        tables = {r[0] for r in connect(store.path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "vxp_replays" not in tables
    finally:
        store.close()


def test_migration_0008_keys_each_kept_status_by_the_sender_of_its_document(tmp_path: Path) -> None:
    """Statuses kept before 0008 (keyed by DocumentId and recipient) move under the sender of the
    document they answer: the agency a status was delivered to, or for a 13 its own sender."""
    old = _store_before(tmp_path / "data", "0008_statuses_keyed_by_the_document_sender")
    answered, taken_back = f"{SENDER},2026/11/21,1/VPCP", f"{SENDER},2026/11/21,2/VPCP"
    # (status message, its sender, code, DocumentId, where it was delivered, whose status it records)
    rows = [("status-03", RECIPIENT, "03", answered, SENDER, RECIPIENT),
            ("status-13", SENDER, "13", taken_back, RECIPIENT, RECIPIENT)]
    for message_id, sender, code, document_id, delivered_to, recorded_for in rows:
        old.execute(
            "INSERT INTO messages (id, kind, sender, document_id, sha256, size, accepted_at) VALUES (?, 'status', ?, ?, ?, 1, ?)",
            (message_id, sender, document_id, "ab" * 32, AT),
        )
        old.execute(
            "INSERT INTO deliveries (message_id, recipient, state, priority, created_at, due_at, expires_at)"
            " VALUES (?, ?, 'delivered', 0, 0, 0, 0)",
            (message_id, delivered_to),
        )
        old.execute(
            "INSERT INTO statuses (document_id, recipient, status_code, message_id, updated_at) VALUES (?, ?, ?, ?, ?)",
            (document_id, recorded_for, code, message_id, AT),
        )
    old.close()
    store = SQLiteStore(tmp_path / "data")
    try:
        assert store.status(SENDER, answered, RECIPIENT) == "03"
        assert store.status(SENDER, taken_back, RECIPIENT) == "13"
        assert store.statuses(RECIPIENT, answered) == [] and store.statuses(RECIPIENT, taken_back) == []
    finally:
        store.close()


def test_blobs_are_content_addressed_deduplicated_and_checked(store: SQLiteStore) -> None:
    digest = store.blobs.put(b"<edXML/>")
    assert store.blobs.put(b"<edXML/>") == digest
    assert store.blobs.get(digest) == b"<edXML/>"
    store.blobs.path(digest).write_bytes(b"<edXML>forged</edXML>")
    with pytest.raises(StoreError) as damaged:
        store.blobs.get(digest)
    assert damaged.value.code == "store.blob_corrupt"
    with pytest.raises(StoreError) as missing:
        store.blobs.get("cd" * 32)
    assert missing.value.code == "store.blob_missing"


def test_registry_reads_see_writes_made_by_another_process_at_once(store: SQLiteStore) -> None:
    assert store.agency(SENDER) is not None and store.agency(SENDER).status == "active"  # type: ignore[union-attr]
    cli = SQLiteStore(store.path.parent)  # the `axis` CLI writes the same database directly
    try:
        cli.set_agency_status(SENDER, "suspended", AT)
    finally:
        cli.close()
    assert store.agency(SENDER).status == "suspended"  # type: ignore[union-attr]


def test_event_log_is_append_only_and_tampering_is_found(store: SQLiteStore) -> None:
    store.enqueue(message(), T0, T0 + 3600)
    report = store.verify_chain()
    assert report.events == 4  # three agencies and one message
    writer = connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        writer.execute("UPDATE events SET content = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        writer.execute("DELETE FROM events WHERE seq = 2")
    writer.execute("DROP TRIGGER events_append_only_update")
    writer.execute(
        "UPDATE events SET content = replace(content, 'agency 000.00.00.H41', 'forged') WHERE seq = 2"
    )
    with pytest.raises(StoreError) as broken:
        store.verify_chain()
    assert broken.value.code == "store.chain_broken" and broken.value.fields["seq"] == 2


def test_enqueue_is_one_transaction_for_all_recipients(store: SQLiteStore) -> None:
    first = message((RECIPIENT, OTHER))
    ids = store.enqueue(first, T0, T0 + 3600)
    assert len(ids) == 2 and all(store.delivery(i).state == "queued" for i in ids)  # type: ignore[union-attr]
    duplicate = NewMessage(**{**first.__dict__, "id": str(uuid.uuid4()), "recipients": (RECIPIENT,)})
    with pytest.raises(StoreError) as conflict:
        store.enqueue(duplicate, T0, T0 + 3600)
    assert conflict.value.code == "store.duplicate" and conflict.value.fields["message_id"] == first.id
    assert len(store.deliveries()) == 2  # the refused message left nothing behind


def test_lease_orders_by_priority_then_age_and_only_due_ones(store: SQLiteStore) -> None:
    low = store.enqueue(message(priority=0), T0, T0 + 3600)[0]
    high = store.enqueue(message(priority=3), T0 + 1, T0 + 3600)[0]
    later = store.enqueue(message(priority=0), T0 + 100, T0 + 3600)[0]
    leased = store.lease([RECIPIENT], T0 + 10, T0 + 40, 10, leased_by=1)
    assert [d.id for d in leased] == [high, low]
    assert later not in [d.id for d in leased]
    assert store.lease([RECIPIENT], T0 + 10, T0 + 40, 10, leased_by=2) == []


def test_lease_over_many_agencies_merges_their_queues_in_lease_order(store: SQLiteStore) -> None:
    """An endpoint serving many agencies gets the highest priority, then oldest, deliveries across
    all of them, and no more than ``limit``."""
    agencies = [f"{n:03d}.00.00.H40" for n in range(1, 131)]
    for organ_id in agencies:
        store.add_agency(Agency(organ_id, "qcvn102", organ_id, AT))
    old = store.enqueue(message((agencies[0], agencies[-1])), T0, T0 + 3600)
    urgent = store.enqueue(message((agencies[-2],), priority=3), T0 + 5, T0 + 3600)
    young = store.enqueue(message((agencies[100],)), T0 + 6, T0 + 3600)
    store.enqueue(message((RECIPIENT,), priority=3), T0, T0 + 3600)  # not one of the endpoint's agencies
    leased = store.lease(agencies, T0 + 10, T0 + 40, 3, leased_by=1)
    assert [d.id for d in leased] == [*urgent, *old]
    assert [d.id for d in store.lease(agencies, T0 + 10, T0 + 40, 3, leased_by=1)] == young


def test_ack_is_idempotent_and_delivers_exactly_once(store: SQLiteStore) -> None:
    delivery = store.enqueue(message(), T0, T0 + 3600)[0]
    store.lease([RECIPIENT], T0, T0 + 30, 1, leased_by=1)
    assert store.ack(delivery, T0 + 1, "ee" * 32) is True
    assert store.ack(delivery, T0 + 2) is False
    row = store.delivery(delivery)
    assert row is not None and (row.state, row.delivered_at, row.ack_sha256) == (
        "delivered",
        T0 + 1,
        "ee" * 32,
    )
    assert sum(1 for e in store.events() if '"delivery.delivered"' in e.content) == 1


def test_failure_retries_then_expires_and_admin_requeues(store: SQLiteStore) -> None:
    delivery = store.enqueue(message(), T0, T0 + 100)[0]
    store.lease([RECIPIENT], T0, T0 + 30, 1, leased_by=1)
    assert store.fail(delivery, T0 + 1, T0 + 10, "connection refused") == "queued"
    assert store.lease([RECIPIENT], T0 + 5, T0 + 35, 1, leased_by=1) == []  # not due yet
    assert len(store.lease([RECIPIENT], T0 + 10, T0 + 40, 1, leased_by=1)) == 1
    assert store.fail(delivery, T0 + 11, T0 + 200, "503") == "expired"  # the retry would fall past the TTL
    with pytest.raises(StoreError) as expired:
        store.ack(delivery, T0 + 12)
    assert expired.value.code == "store.invalid_transition"
    store.requeue(delivery, T0 + 300, T0 + 900, by="admin")
    row = store.delivery(delivery)
    assert row is not None and (row.state, row.expires_at) == ("queued", T0 + 900)
    assert store.ack(delivery, T0 + 301) is True


def test_ttl_expires_queued_and_leased_deliveries(store: SQLiteStore) -> None:
    queued = store.enqueue(message(), T0, T0 + 100)[0]
    leased = store.enqueue(message(), T0, T0 + 100)[0]
    store.lease([RECIPIENT], T0, T0 + 500, 1, leased_by=1)
    assert sorted(store.expire(T0 + 100)) == sorted([queued, leased])
    assert store.expire(T0 + 200) == []


def test_lease_past_its_deadline_returns_to_queued(store: SQLiteStore) -> None:
    delivery = store.enqueue(message(), T0, T0 + 3600)[0]
    store.lease([RECIPIENT], T0, T0 + 30, 1, leased_by=1)
    assert store.release_stale_leases(T0 + 29) == []
    assert store.release_stale_leases(T0 + 30) == [delivery]
    again = store.lease([RECIPIENT], T0 + 31, T0 + 61, 1, leased_by=2)
    assert [d.id for d in again] == [delivery] and again[0].attempts == 2


@pytest.mark.parametrize(
    ("setup", "action"),
    [
        ("queued", "fail"),
        ("queued", "requeue"),
        ("delivered", "fail"),
        ("delivered", "requeue"),
        ("leased", "requeue"),
        ("expired", "fail"),
        ("expired", "ack"),
    ],
)
def test_illegal_transitions_are_refused(store: SQLiteStore, setup: str, action: str) -> None:
    delivery = store.enqueue(message(), T0, T0 + 100)[0]
    if setup in ("leased", "delivered"):
        store.lease([RECIPIENT], T0, T0 + 30, 1, leased_by=1)
    if setup == "delivered":
        store.ack(delivery, T0 + 1)
    if setup == "expired":
        store.expire(T0 + 100)
    with pytest.raises(StoreError) as refused:
        if action == "fail":
            store.fail(delivery, T0 + 2, T0 + 5, "x")
        elif action == "requeue":
            store.requeue(delivery, T0 + 2, T0 + 500, by="admin")
        else:
            store.ack(delivery, T0 + 2)
    assert refused.value.code == "store.invalid_transition"
    assert store.delivery(delivery).state == setup  # type: ignore[union-attr]


def test_concurrent_leasers_never_share_a_delivery(store: SQLiteStore) -> None:
    for _ in range(200):
        store.enqueue(message(), T0, T0 + 3600)
    claimed: list[int] = []
    lock = threading.Lock()

    def leaser(worker: int) -> None:
        while batch := store.lease([RECIPIENT], T0 + 1, T0 + 60, 7, leased_by=worker):
            with lock:
                claimed.extend(d.id for d in batch)

    threads = [threading.Thread(target=leaser, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 200 and len(set(claimed)) == 200


def test_a_failing_operation_does_not_spoil_its_batch(store: SQLiteStore) -> None:
    good = [
        store.committer.submit(
            lambda c, i=i: (
                c.execute(
                    "INSERT INTO role_tokens (token_hash, role, name, created_at) VALUES (?, 'admin', 'x', 'now')",
                    (f"h{i}",),
                ).rowcount
            )
        )
        for i in range(20)
    ]
    bad = store.committer.submit(lambda c: c.execute("INSERT INTO agencies (organ_id) VALUES ('x')"))
    assert [f.result() for f in good] == [1] * 20
    with pytest.raises(StoreError) as refused:
        bad.result()
    assert refused.value.code == "store.conflict"


def test_two_processes_writing_keep_one_chain(store: SQLiteStore) -> None:
    """A second store on the same file (an admin command beside the server) must not fork the chain."""
    other = SQLiteStore(store.path.parent)
    try:
        for n in range(5):
            store.enqueue(message(), T0 + n, T0 + 3600)
            other.enqueue(message(), T0 + n, T0 + 3600)
        assert store.verify_chain().events == 3 + 10
    finally:
        other.close()


def test_a_database_that_cannot_be_opened_is_store_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of file descriptors, SQLite cannot open a reader's connection: a refusal to retry."""
    import threading

    from axis.store import sqlite as engine

    store = SQLiteStore(tmp_path / "data")
    try:
        def unable(*args: object, **kwargs: object) -> object:
            raise sqlite3.OperationalError("unable to open database file")

        monkeypatch.setattr(engine, "connect", unable)
        failures: list[BaseException] = []

        def read() -> None:  # a thread of its own: a reader connection not opened yet
            try:
                store.agency(SENDER)
            except BaseException as error:
                failures.append(error)

        thread = threading.Thread(target=read)
        thread.start()
        thread.join(10)
        assert len(failures) == 1 and isinstance(failures[0], StoreError) and failures[0].code == "store.unavailable"
    finally:
        monkeypatch.undo()
        store.close()


def test_a_full_disk_is_store_disk_full_and_nothing_is_half_written(tmp_path: Path) -> None:
    """SQLite's SQLITE_FULL (the database cannot grow) becomes ``store.disk_full`` (507 over HTTP),
    named by its code, not by matching SQLite's words."""
    store = SQLiteStore(tmp_path / "data")
    try:
        pages = store.committer.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        store.committer.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))
        with pytest.raises(StoreError) as full:
            for n in range(10_000):
                store.add_agency(Agency(f"000.00.{n // 100:02d}.H{n % 100:02d}", "qcvn102", "x" * 2000, AT))
        assert full.value.code == "store.disk_full"
        assert store.verify_chain().events == len(store.agencies())  # every agency kept has its event, no more
    finally:
        store.close()
