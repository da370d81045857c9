"""The PostgreSQL store's schema: the SQLite store's tables (same names, same columns, so the
same statements run on both), its own migrations, each recorded in the transaction that applies
it. The first one is the SQLite schema as its eight migrations left it."""

from __future__ import annotations

from typing import Any

import psycopg

REGISTRY_TABLES = ("agencies", "certificates", "endpoints", "endpoint_agencies", "role_tokens")

INITIAL = [
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
        id                      BIGSERIAL PRIMARY KEY,
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
        endpoint_id BIGINT NOT NULL REFERENCES endpoints(id),
        organ_id    TEXT NOT NULL REFERENCES agencies(organ_id),
        PRIMARY KEY (endpoint_id, organ_id)
    )
    """,
    "CREATE INDEX endpoint_agencies_by_agency ON endpoint_agencies(organ_id)",
    """
    CREATE TABLE role_tokens (
        rowid      BIGSERIAL UNIQUE,
        token_hash TEXT PRIMARY KEY,
        role       TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
        name       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )
    """,
    """
    CREATE TABLE messages (
        rowid         BIGSERIAL UNIQUE,
        id            TEXT PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('document', 'status', 'receipt')),
        sender        TEXT NOT NULL,
        document_id   TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        size          BIGINT NOT NULL,
        priority      INTEGER NOT NULL DEFAULT 0,
        accepted_at   TEXT NOT NULL,
        signed_digest TEXT,
        due_date      TEXT,
        UNIQUE (sender, document_id, sha256)
    )
    """,
    "CREATE INDEX messages_by_document ON messages(sender, document_id)",
    "CREATE INDEX messages_by_signed_digest ON messages(sender, document_id, signed_digest)",
    "CREATE INDEX messages_by_acceptance ON messages(accepted_at)",
    """
    CREATE TABLE deliveries (
        id              BIGSERIAL PRIMARY KEY,
        message_id      TEXT NOT NULL REFERENCES messages(id),
        recipient       TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'delivered', 'expired')),
        priority        INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at      DOUBLE PRECISION NOT NULL,
        due_at          DOUBLE PRECISION NOT NULL,
        expires_at      DOUBLE PRECISION NOT NULL,
        lease_deadline  DOUBLE PRECISION,
        leased_by       BIGINT,
        delivered_at    DOUBLE PRECISION,
        ack_sha256      TEXT,
        last_error      TEXT,
        UNIQUE (message_id, recipient)
    )
    """,
    "CREATE INDEX deliveries_due ON deliveries(recipient, state, priority DESC, due_at, id)",
    "CREATE INDEX deliveries_leased ON deliveries(state, lease_deadline)",
    "CREATE INDEX deliveries_by_expiry ON deliveries(state, expires_at)",
    """
    CREATE TABLE vxp_credentials (
        system_id     TEXT PRIMARY KEY,
        endpoint_id   BIGINT NOT NULL UNIQUE REFERENCES endpoints(id),
        sealed_secret BYTEA NOT NULL,
        role          TEXT NOT NULL DEFAULT 'endpoint' CHECK (role IN ('endpoint', 'admin')),
        sources       TEXT
    )
    """,
    "CREATE TABLE packages (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL)",
    "CREATE TABLE registry_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
    "INSERT INTO registry_version (id, version) VALUES (1, 0)",
    """
    CREATE FUNCTION bump_registry_version() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN UPDATE registry_version SET version = version + 1; RETURN NULL; END $$
    """,
    *(
        f"CREATE TRIGGER {table}_bumps_registry AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version()"
        for table in REGISTRY_TABLES
    ),
    """
    CREATE TABLE events (
        seq      BIGINT PRIMARY KEY,
        content  TEXT NOT NULL,
        previous TEXT NOT NULL,
        hash     TEXT NOT NULL
    )
    """,
    """
    CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the event log is append-only'; END $$
    """,
    "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events"
    " FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()",
    "CREATE INDEX events_by_subject ON events (((content::jsonb) ->> 'subject'))",
    """
    CREATE TABLE receipts (
        id         BIGSERIAL PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id),
        kind       TEXT NOT NULL CHECK (kind IN ('accepted', 'delivered', 'failed')),
        recipient  TEXT,
        sha256     TEXT NOT NULL REFERENCES packages(sha256),
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX receipts_by_message ON receipts(message_id)",
    """
    CREATE TABLE statuses (
        sender      TEXT NOT NULL,
        document_id TEXT NOT NULL,
        recipient   TEXT NOT NULL,
        status_code TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (sender, document_id, recipient)
    )
    """,
]

WAKE = [
    # Every node's long-polls and push dispatcher wait on the agencies something is queued for:
    # the database says so on commit (a NOTIFY is sent only if its transaction commits, and the
    # same agency twice in one transaction is sent once).
    """
    CREATE FUNCTION notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.state = 'queued' THEN PERFORM pg_notify('axis_queued', NEW.recipient); END IF;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER deliveries_notify_queued AFTER INSERT OR UPDATE OF state ON deliveries"
    " FOR EACH ROW EXECUTE FUNCTION notify_queued()",
]

MIGRATIONS: list[tuple[str, list[str]]] = [
    ("0001_the_sqlite_schema_of_migration_0008", INITIAL),
    ("0002_notify_other_nodes_of_queued_deliveries", WAKE),
    ("0003_leases_owned_by_a_node", ["ALTER TABLE deliveries ADD COLUMN leased_node TEXT"]),
    (
        "0004_large_packages_in_chunks",
        [
            "CREATE TABLE package_chunks (sha256 TEXT NOT NULL, n INTEGER NOT NULL, data BYTEA NOT NULL,"
            " PRIMARY KEY (sha256, n))",
            """
            INSERT INTO package_chunks (sha256, n, data)
            SELECT p.sha256, 0, p.data FROM packages p
            WHERE length(p.data) > 262144 AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.sha256 = p.sha256)
            """,
            """
            DELETE FROM packages p
            WHERE length(p.data) > 262144 AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.sha256 = p.sha256)
            """,
        ],
    ),
]
CHANNEL = "axis_queued"


def migrate(connection: psycopg.Connection[Any]) -> None:
    """Apply every pending migration inside the caller's transaction, each recorded with it."""
    connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
    done = {row[0] for row in connection.execute("SELECT name FROM schema_migrations")}
    for name, statements in MIGRATIONS:
        if name in done:
            continue
        for statement in statements:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (%s, now())", (name,))
