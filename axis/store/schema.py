"""The database schema as numbered migrations (sqlite-utils records each in the same transaction).

Table and column names live here only. States are constrained in the schema itself, so a bug
elsewhere cannot write a delivery state the state machine does not know. The event log is
append-only: triggers refuse UPDATE and DELETE.
"""

from __future__ import annotations

import hashlib

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

DELIVERY_STATES = ("queued", "leased", "delivered", "expired")

migrations = Migrations("axis")


def _execute(db: Database, statements: list[str]) -> None:
    for statement in statements:
        db.execute(statement)


EVENTS_APPEND_ONLY = [
    """
    CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END
    """,
    """
    CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END
    """,
]
EVENTS_BY_SUBJECT = "CREATE INDEX events_by_subject ON events(json_extract(content, '$.subject'))"
"""A message's trail: its events and its deliveries' events, found by subject."""


@migrations(name="0001_registry_messages_deliveries_events")
def _m0001(db: Database) -> None:
    _execute(db, SCHEMA_0001)


SCHEMA_0001 = [
    """
    CREATE TABLE agencies (
        organ_id   TEXT PRIMARY KEY,
        form       TEXT NOT NULL CHECK (form IN ('qcvn102', 'qd20')),
        name       TEXT NOT NULL,
        parent     TEXT REFERENCES agencies(organ_id),
        status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        created_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE certificates (
        fingerprint TEXT PRIMARY KEY,
        organ_id    TEXT NOT NULL REFERENCES agencies(organ_id),
        pem         TEXT NOT NULL,
        subject     TEXT NOT NULL,
        not_before  TEXT NOT NULL,
        not_after   TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
        added_at    TEXT NOT NULL,
        revoked_at  TEXT
    )
    """,
    "CREATE INDEX certificates_by_agency ON certificates(organ_id)",
    """
    CREATE TABLE endpoints (
        id                      INTEGER PRIMARY KEY,
        name                    TEXT NOT NULL UNIQUE,
        mode                    TEXT NOT NULL CHECK (mode IN ('push', 'pull')),
        push_url                TEXT,
        token_hash              TEXT NOT NULL UNIQUE,
        client_cert_fingerprint TEXT,
        status                  TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
        created_at              TEXT NOT NULL,
        CHECK ((mode = 'push') = (push_url IS NOT NULL))
    )
    """,
    """
    CREATE TABLE endpoint_agencies (
        endpoint_id INTEGER NOT NULL REFERENCES endpoints(id),
        organ_id    TEXT NOT NULL REFERENCES agencies(organ_id),
        PRIMARY KEY (endpoint_id, organ_id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX endpoint_agencies_by_agency ON endpoint_agencies(organ_id)",
    """
    CREATE TABLE role_tokens (
        token_hash TEXT PRIMARY KEY,
        role       TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
        name       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )
    """,
    """
    CREATE TABLE messages (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('document', 'status', 'receipt')),
        sender      TEXT NOT NULL,
        document_id TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        priority    INTEGER NOT NULL DEFAULT 0,
        accepted_at TEXT NOT NULL,
        UNIQUE (sender, document_id, sha256)
    )
    """,
    "CREATE INDEX messages_by_document ON messages(sender, document_id)",
    """
    CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY,
        message_id      TEXT NOT NULL REFERENCES messages(id),
        recipient       TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'delivered', 'expired')),
        priority        INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at      REAL NOT NULL,
        due_at          REAL NOT NULL,
        expires_at      REAL NOT NULL,
        lease_deadline  REAL,
        leased_by       INTEGER,
        delivered_at    REAL,
        ack_sha256      TEXT,
        last_error      TEXT,
        UNIQUE (message_id, recipient)
    )
    """,
    # Leasing reads only due, queued deliveries of one recipient, best first: this index keeps
    # that independent of how many messages are stored.
    "CREATE INDEX deliveries_due ON deliveries(recipient, state, priority DESC, due_at, id)",
    "CREATE INDEX deliveries_leased ON deliveries(state, lease_deadline)",
    "CREATE INDEX deliveries_by_expiry ON deliveries(state, expires_at)",
    """
    CREATE TABLE receipts (
        id         INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id),
        kind       TEXT NOT NULL CHECK (kind IN ('accepted', 'delivered', 'failed')),
        recipient  TEXT,
        xml        BLOB NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX receipts_by_message ON receipts(message_id)",
    """
    CREATE TABLE statuses (
        document_id TEXT NOT NULL,
        recipient   TEXT NOT NULL,
        status_code TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (document_id, recipient)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE events (
        seq      INTEGER PRIMARY KEY,
        content  TEXT NOT NULL,
        previous TEXT NOT NULL,
        hash     TEXT NOT NULL UNIQUE
    )
    """,
    *EVENTS_APPEND_ONLY,
]


@migrations(name="0002_message_digest_due_date_event_subjects")
def _m0002(db: Database) -> None:
    _execute(db, SCHEMA_0002)


SCHEMA_0002 = [
    "ALTER TABLE messages ADD COLUMN signed_digest TEXT",
    "ALTER TABLE messages ADD COLUMN due_date TEXT",
    "CREATE INDEX messages_by_signed_digest ON messages(sender, document_id, signed_digest)",
    "CREATE INDEX messages_by_acceptance ON messages(accepted_at)",
    "CREATE INDEX deliveries_by_message ON deliveries(message_id)",
    EVENTS_BY_SUBJECT,
]


@migrations(name="0003_vxp_credentials")
def _m0003(db: Database) -> None:
    _execute(db, SCHEMA_0003)


SCHEMA_0003 = [
    """
    CREATE TABLE vxp_credentials (
        system_id     TEXT PRIMARY KEY,
        endpoint_id   INTEGER NOT NULL UNIQUE REFERENCES endpoints(id),
        sealed_secret BLOB NOT NULL,
        role          TEXT NOT NULL DEFAULT 'endpoint' CHECK (role IN ('endpoint', 'admin'))
    )
    """,
    # HMAC signatures already used, kept for the freshness window: a replay is refused even
    # across a restart.
    "CREATE TABLE vxp_replays (signature TEXT PRIMARY KEY, seen_at REAL NOT NULL)",
    "CREATE INDEX vxp_replays_by_time ON vxp_replays(seen_at)",
]


REGISTRY_TABLES = ("agencies", "certificates", "endpoints", "endpoint_agencies", "role_tokens")


@migrations(name="0004_inline_packages_registry_version")
def _m0004(db: Database) -> None:
    _execute(db, SCHEMA_0004)


SCHEMA_0004 = [
    # Packages small enough to be written inside the transaction that records them (see blobs.py).
    "CREATE TABLE packages (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL)",
    # Bumped by every registry write, whichever process makes it (the server or the `axis` CLI):
    # what the server's in-memory registry cache compares before it trusts what it holds.
    "CREATE TABLE registry_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    "INSERT INTO registry_version (id, version) VALUES (1, 0)",
    *(
        f"CREATE TRIGGER {table}_{event.lower()}_bumps_registry AFTER {event} ON {table}"  # noqa: S608 (constants)
        " BEGIN UPDATE registry_version SET version = version + 1; END"
        for table in REGISTRY_TABLES
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
]


@migrations(name="0005_fewer_random_index_writes")
def _m0005(db: Database) -> None:
    _execute(db, SCHEMA_0005)


SCHEMA_0005 = [
    # Every insert into a B-tree keyed by a random value (a hash, a UUID) dirties a page of its
    # own, and every dirtied page is written to the WAL at each commit. Measured per group commit
    # of about 30 deliveries: 100 of 330 pages were the UNIQUE index on events.hash, which
    # nothing reads (the chain is checked by walking seq), and 20 were deliveries_by_message,
    # which repeats the UNIQUE (message_id, recipient) index. The event log is rebuilt without
    # that constraint, its content, order and hashes unchanged.
    """
    CREATE TABLE events_0005 (
        seq      INTEGER PRIMARY KEY,
        content  TEXT NOT NULL,
        previous TEXT NOT NULL,
        hash     TEXT NOT NULL
    )
    """,
    "INSERT INTO events_0005 (seq, content, previous, hash) SELECT seq, content, previous, hash FROM events",
    "DROP TABLE events",  # its triggers and events_by_subject go with it, and come back below
    "ALTER TABLE events_0005 RENAME TO events",
    *EVENTS_APPEND_ONLY,
    EVENTS_BY_SUBJECT,
    "DROP INDEX deliveries_by_message",
]


@migrations(name="0006_receipt_bytes_kept_once")
def _m0006(db: Database) -> None:
    """A receipt's signed XML is kept once, in ``packages`` under its SHA-256, and ``receipts``
    names it. A ``delivered`` or ``failed`` receipt is also the package queued for the sender,
    whose bytes are in ``packages`` already: it was written twice, about 30 of the ~190 WAL
    pages of a group commit of ~30 deliveries."""
    db.execute(RECEIPTS_0006)
    rows = db.execute("SELECT id, message_id, kind, recipient, xml, created_at FROM receipts ORDER BY id")
    for receipt_id, message_id, kind, recipient, xml, created_at in rows:
        digest = hashlib.sha256(xml).hexdigest()
        db.execute("INSERT OR IGNORE INTO packages (sha256, data) VALUES (?, ?)", [digest, xml])
        db.execute(
            "INSERT INTO receipts_0006 (id, message_id, kind, recipient, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [receipt_id, message_id, kind, recipient, digest, created_at],
        )
    db.execute("DROP TABLE receipts")
    db.execute("ALTER TABLE receipts_0006 RENAME TO receipts")
    db.execute("CREATE INDEX receipts_by_message ON receipts(message_id)")


RECEIPTS_0006 = """
    CREATE TABLE receipts_0006 (
        id         INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id),
        kind       TEXT NOT NULL CHECK (kind IN ('accepted', 'delivered', 'failed')),
        recipient  TEXT,
        sha256     TEXT NOT NULL REFERENCES packages(sha256),
        created_at TEXT NOT NULL
    )
"""


@migrations(name="0007_vxp_sources_no_replay_cache")
def _m0007(db: Database) -> None:
    _execute(db, SCHEMA_0007)


SCHEMA_0007 = [
    # The SDK signs once per service object, so a repeated signature is ordinary client behaviour
    # (docs/vxp.md): the replay cache refused the vendor's own receive loop.
    "DROP TABLE vxp_replays",
    # Source addresses (JSON list of networks, e.g. ["10.1.2.0/24"]) a system id may call from;
    # NULL = any.
    "ALTER TABLE vxp_credentials ADD COLUMN sources TEXT",
]


@migrations(name="0008_statuses_keyed_by_the_document_sender")
def _m0008(db: Database) -> None:
    """A DocumentId is a text the sender writes, and several senders may write the same one
    (packages exist whose DocumentId names another agency than their From). Keyed by (DocumentId,
    recipient) alone, one sender's status rows could be read and overwritten through another's
    document: the latest status is now keyed by the sender of the document it answers too. Rows
    kept so far take it from the status package that recorded them (for a 13, its own sender; for
    any other, the agency it was delivered to)."""
    _execute(db, SCHEMA_0008)


SCHEMA_0008 = [
    """
    CREATE TABLE statuses_0008 (
        sender      TEXT NOT NULL,
        document_id TEXT NOT NULL,
        recipient   TEXT NOT NULL,
        status_code TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (sender, document_id, recipient)
    ) WITHOUT ROWID
    """,
    """
    INSERT OR REPLACE INTO statuses_0008 (sender, document_id, recipient, status_code, message_id, updated_at)
    SELECT CASE WHEN s.status_code = '13' THEN m.sender
                ELSE (SELECT d.recipient FROM deliveries d WHERE d.message_id = s.message_id ORDER BY d.id LIMIT 1)
           END,
           s.document_id, s.recipient, s.status_code, s.message_id, s.updated_at
    FROM statuses s JOIN messages m ON m.id = s.message_id
    """,
    "DROP TABLE statuses",
    "ALTER TABLE statuses_0008 RENAME TO statuses",
]


@migrations(name="0009_leases_owned_by_a_node")
def _m0009(db: Database) -> None:
    """A lease names the axis node that took it, so that a node stopping (or starting again)
    releases its own leases early and never another node's (PostgreSQL: several nodes, one store)."""
    _execute(db, ["ALTER TABLE deliveries ADD COLUMN leased_node TEXT"])


def migrate(db: Database) -> None:
    """Apply every pending migration, each in one transaction with its record."""
    migrations.apply(db)
