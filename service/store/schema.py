"""Versioned schema migrations; a store applies every version it has not yet recorded."""

from __future__ import annotations


def _row_state(blob: str, real: str) -> list[str]:
    """Version 7: one row per (sync, key) in place of `pending_rows` and `synced_rows`: the newest
    version received (seq, op, data, row_hash, ...), whether it still waits for a run
    (`pending`), and the hash of the version the destination holds (`synced_hash`, NULL when it
    holds none). Sending a row then updates it in place instead of moving it between tables.
    `data` keeps the newest upsert's source columns when a delete arrives, for the removal.
    In SQLite the rows (a few hundred bytes) live in a rowid table, which keeps large rows
    cheaper to write than a WITHOUT ROWID one; (sync_id, key) is a unique index."""
    key = "PRIMARY KEY" if blob == "BYTEA" else "UNIQUE"
    return [
        f"""CREATE TABLE row_state (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, seq BIGINT NOT NULL, op TEXT NOT NULL,
            data {blob}, row_hash {blob}, emitted_at {real},
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, last_attempt_at {real},
            synced_hash {blob}, pending SMALLINT NOT NULL,
            {key} (sync_id, key))""",
        "CREATE INDEX row_state_pending ON row_state (sync_id, seq) WHERE pending = 1",
        "INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, synced_hash, pending) "
        "SELECT sync_id, key, 0, 'upsert', COALESCE(source, data), row_hash, row_hash, 0 "
        "FROM synced_rows",
        "INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, attempts, "
        "error, last_attempt_at, pending) SELECT sync_id, key, seq, op, data, row_hash, "
        "emitted_at, attempts, error, last_attempt_at, 1 FROM pending_rows WHERE 1 = 1 "
        "ON CONFLICT (sync_id, key) DO UPDATE SET seq = excluded.seq, op = excluded.op, "
        "data = COALESCE(excluded.data, row_state.data), row_hash = excluded.row_hash, "
        "emitted_at = excluded.emitted_at, attempts = excluded.attempts, "
        "error = excluded.error, last_attempt_at = excluded.last_attempt_at, pending = 1",
        "DROP TABLE pending_rows",
        "DROP TABLE synced_rows",
    ]


# Each entry is one schema version: statements applied in one transaction.
SQLITE_MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO meta (name, value) VALUES ('catalog_version', 0), ('seq', 0), ('run_id', 0)",
        """CREATE TABLE sources (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            doc TEXT NOT NULL, UNIQUE (workspace_id, slug))""",
        """CREATE TABLE models (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            source_id TEXT, doc TEXT NOT NULL, UNIQUE (workspace_id, slug))""",
        """CREATE TABLE destinations (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            doc TEXT NOT NULL, UNIQUE (workspace_id, slug))""",
        """CREATE TABLE syncs (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            model_id TEXT NOT NULL, destination_id TEXT NOT NULL, doc TEXT NOT NULL,
            status TEXT, last_run_at TEXT, UNIQUE (workspace_id, slug))""",
        """CREATE TABLE pending_rows (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL,
            data BLOB, row_hash BLOB, emitted_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, last_attempt_at REAL,
            PRIMARY KEY (sync_id, key)) WITHOUT ROWID""",
        "CREATE INDEX pending_rows_by_seq ON pending_rows (sync_id, seq)",
        """CREATE TABLE synced_rows (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, row_hash BLOB NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY (sync_id, key)) WITHOUT ROWID""",
        """CREATE TABLE sync_runs (
            id INTEGER PRIMARY KEY, sync_id TEXT NOT NULL, created_at REAL NOT NULL,
            started_at REAL, finished_at REAL, doc TEXT NOT NULL)""",
        "CREATE INDEX sync_runs_by_sync ON sync_runs (sync_id, created_at)",
    ],
    ["ALTER TABLE synced_rows ADD COLUMN source BLOB"],
    [
        """CREATE TABLE snapshots (
            sync_id TEXT NOT NULL, snapshot_id TEXT NOT NULL, opened_at REAL NOT NULL,
            PRIMARY KEY (sync_id, snapshot_id))""",
        """CREATE TABLE snapshot_keys (
            sync_id TEXT NOT NULL, snapshot_id TEXT NOT NULL, key TEXT NOT NULL,
            PRIMARY KEY (sync_id, snapshot_id, key))""",
    ],
    [
        """CREATE TABLE rejected_rows (
            id INTEGER PRIMARY KEY AUTOINCREMENT, sync_id TEXT NOT NULL, reason TEXT NOT NULL,
            data BLOB NOT NULL, created_at REAL NOT NULL, run_id TEXT)""",
        "CREATE INDEX rejected_rows_by_sync ON rejected_rows (sync_id, run_id)",
    ],
    [
        """CREATE TABLE sync_leases (
            sync_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)""",
    ],
    ["ALTER TABLE snapshots ADD COLUMN closed_at REAL"],
    _row_state("BLOB", "REAL"),
]

# The same tables for PostgreSQL. Run ids and pending-row `seq` come from sequences, so
# replicas sharing the database never hand out the same one; times of runs stay epoch seconds
# (double precision) so the shared run queries work unchanged.
POSTGRES_MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO meta (name, value) VALUES ('catalog_version', 0)",
        "CREATE SEQUENCE pending_seq AS BIGINT",
        "CREATE SEQUENCE run_ids AS BIGINT",
        """CREATE TABLE sources (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            doc TEXT NOT NULL,
            CONSTRAINT sources_slug_unique UNIQUE (workspace_id, slug))""",
        """CREATE TABLE models (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            source_id TEXT, doc TEXT NOT NULL,
            CONSTRAINT models_slug_unique UNIQUE (workspace_id, slug))""",
        "CREATE INDEX models_by_source ON models (source_id)",
        """CREATE TABLE destinations (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            doc TEXT NOT NULL,
            CONSTRAINT destinations_slug_unique UNIQUE (workspace_id, slug))""",
        """CREATE TABLE syncs (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,
            model_id TEXT NOT NULL, destination_id TEXT NOT NULL, doc TEXT NOT NULL,
            status TEXT, last_run_at TIMESTAMPTZ,
            CONSTRAINT syncs_slug_unique UNIQUE (workspace_id, slug))""",
        "CREATE INDEX syncs_by_model ON syncs (model_id)",
        "CREATE INDEX syncs_by_destination ON syncs (destination_id)",
        """CREATE TABLE pending_rows (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, seq BIGINT NOT NULL, op TEXT NOT NULL,
            data BYTEA, row_hash BYTEA, emitted_at DOUBLE PRECISION,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, last_attempt_at DOUBLE PRECISION,
            PRIMARY KEY (sync_id, key))""",
        "CREATE INDEX pending_rows_by_seq ON pending_rows (sync_id, seq)",
        """CREATE TABLE synced_rows (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, row_hash BYTEA NOT NULL,
            data BYTEA NOT NULL, PRIMARY KEY (sync_id, key))""",
        """CREATE TABLE sync_runs (
            id BIGINT PRIMARY KEY, sync_id TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION, doc TEXT NOT NULL)""",
        "CREATE INDEX sync_runs_by_sync ON sync_runs (sync_id, created_at)",
    ],
    ["ALTER TABLE synced_rows ADD COLUMN source BYTEA"],
    [
        """CREATE TABLE snapshots (
            sync_id TEXT NOT NULL, snapshot_id TEXT NOT NULL, opened_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (sync_id, snapshot_id))""",
        """CREATE TABLE snapshot_keys (
            sync_id TEXT NOT NULL, snapshot_id TEXT NOT NULL, key TEXT NOT NULL,
            PRIMARY KEY (sync_id, snapshot_id, key))""",
    ],
    [
        """CREATE TABLE rejected_rows (
            id BIGSERIAL PRIMARY KEY, sync_id TEXT NOT NULL, reason TEXT NOT NULL,
            data BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL, run_id TEXT)""",
        "CREATE INDEX rejected_rows_by_sync ON rejected_rows (sync_id, run_id)",
    ],
    [
        """CREATE TABLE sync_leases (
            sync_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
    ],
    ["ALTER TABLE snapshots ADD COLUMN closed_at DOUBLE PRECISION"],
    _row_state("BYTEA", "DOUBLE PRECISION"),
]
