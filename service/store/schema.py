"""Versioned schema migrations, written once for both dialects; a store applies every version
it has not yet recorded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Types:
    """What the dialects spell differently in a table definition."""

    dialect: str  # "sqlite" | "postgres"
    blob: str
    real: str
    #: The type of an integer primary key (SQLite: `INTEGER`, the rowid's alias).
    int_key: str
    #: A primary key numbered by the database itself.
    serial_key: str
    timestamp: str
    #: Suffix of a table stored by its primary key (SQLite only).
    without_rowid: str
    #: A run's status read from its JSON document.
    json_text: str


SQLITE = Types(
    dialect="sqlite",
    blob="BLOB",
    real="REAL",
    int_key="INTEGER",
    serial_key="INTEGER PRIMARY KEY AUTOINCREMENT",
    timestamp="TEXT",
    without_rowid=" WITHOUT ROWID",
    json_text="doc ->> '$.status'",
)
POSTGRES = Types(
    dialect="postgres",
    blob="BYTEA",
    real="DOUBLE PRECISION",
    int_key="BIGINT",
    serial_key="BIGSERIAL PRIMARY KEY",
    timestamp="TIMESTAMPTZ",
    without_rowid="",
    json_text="doc::jsonb ->> 'status'",
)


class Only:
    """A statement of one dialect only."""

    def __init__(self, dialect: str, sql: str) -> None:
        self.dialect = dialect
        self.sql = sql


def _catalog_table(name: str, extra: str = "") -> str:
    return f"""CREATE TABLE {name} (
            id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, slug TEXT NOT NULL,{extra}
            doc TEXT NOT NULL, CONSTRAINT {name}_slug_unique UNIQUE (workspace_id, slug))"""


# Each entry is one schema version: statements applied in one transaction, `{blob}` and the
# other Types fields filled in per dialect. Run ids and pending-row `seq` come from meta
# counters in SQLite (one process) and from sequences in PostgreSQL, so replicas sharing the
# database never hand out the same one. Times of runs are epoch seconds in both.
_MIGRATIONS: list[list[str | Only]] = [
    [
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO meta (name, value) VALUES ('catalog_version', 0)",
        Only("sqlite", "INSERT INTO meta (name, value) VALUES ('seq', 0), ('run_id', 0)"),
        Only("postgres", "CREATE SEQUENCE pending_seq AS BIGINT"),
        Only("postgres", "CREATE SEQUENCE run_ids AS BIGINT"),
        _catalog_table("sources"),
        _catalog_table("models", " source_id TEXT,"),
        "CREATE INDEX models_by_source ON models (source_id)",
        _catalog_table("destinations"),
        _catalog_table(
            "syncs",
            " model_id TEXT NOT NULL, destination_id TEXT NOT NULL,"
            " status TEXT, last_run_at {timestamp},",
        ),
        "CREATE INDEX syncs_by_model ON syncs (model_id)",
        "CREATE INDEX syncs_by_destination ON syncs (destination_id)",
        """CREATE TABLE pending_rows (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, seq BIGINT NOT NULL, op TEXT NOT NULL,
            data {blob}, row_hash {blob}, emitted_at {real},
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, last_attempt_at {real},
            PRIMARY KEY (sync_id, key)){without_rowid}""",
        "CREATE INDEX pending_rows_by_seq ON pending_rows (sync_id, seq)",
        """CREATE TABLE synced_rows (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, row_hash {blob} NOT NULL,
            data {blob} NOT NULL, PRIMARY KEY (sync_id, key)){without_rowid}""",
        """CREATE TABLE sync_runs (
            id {int_key} PRIMARY KEY, sync_id TEXT NOT NULL, created_at {real} NOT NULL,
            started_at {real}, finished_at {real}, doc TEXT NOT NULL)""",
        "CREATE INDEX sync_runs_by_sync ON sync_runs (sync_id, created_at)",
    ],
    ["ALTER TABLE synced_rows ADD COLUMN source {blob}"],
    [
        """CREATE TABLE snapshots (
            sync_id TEXT NOT NULL, snapshot_id TEXT NOT NULL, opened_at {real} NOT NULL,
            PRIMARY KEY (sync_id, snapshot_id))""",
        """CREATE TABLE snapshot_keys (
            sync_id TEXT NOT NULL, snapshot_id TEXT NOT NULL, key TEXT NOT NULL,
            PRIMARY KEY (sync_id, snapshot_id, key))""",
    ],
    [
        """CREATE TABLE rejected_rows (
            id {serial_key}, sync_id TEXT NOT NULL, reason TEXT NOT NULL,
            data {blob} NOT NULL, created_at {real} NOT NULL, run_id TEXT)""",
        "CREATE INDEX rejected_rows_by_sync ON rejected_rows (sync_id, run_id)",
    ],
    [
        """CREATE TABLE sync_leases (
            sync_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at {real} NOT NULL)""",
    ],
    ["ALTER TABLE snapshots ADD COLUMN closed_at {real}"],
    # Version 7: one row per (sync, key) in place of `pending_rows` and `synced_rows`: the
    # newest version received (seq, op, data, row_hash, ...), whether it still waits for a run
    # (`pending`), and the hash of the version the destination holds (`synced_hash`, NULL when
    # it holds none). Sending a row then updates it in place instead of moving it between
    # tables. `data` keeps the newest upsert's source columns when a delete arrives, for the
    # removal. In SQLite the rows (a few hundred bytes) live in a rowid table, which keeps
    # large rows cheaper to write than a WITHOUT ROWID one; (sync_id, key) is a unique index.
    [
        Only(
            "sqlite",
            """CREATE TABLE row_state (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, seq BIGINT NOT NULL, op TEXT NOT NULL,
            data BLOB, row_hash BLOB, emitted_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, last_attempt_at REAL,
            synced_hash BLOB, pending SMALLINT NOT NULL, UNIQUE (sync_id, key))""",
        ),
        Only(
            "postgres",
            """CREATE TABLE row_state (
            sync_id TEXT NOT NULL, key TEXT NOT NULL, seq BIGINT NOT NULL, op TEXT NOT NULL,
            data BYTEA, row_hash BYTEA, emitted_at DOUBLE PRECISION,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, last_attempt_at DOUBLE PRECISION,
            synced_hash BYTEA, pending SMALLINT NOT NULL, PRIMARY KEY (sync_id, key))""",
        ),
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
    ],
    # Version 8: leases carry a fencing token that grows with every acquisition (a released
    # lease keeps its row, expired, so the next token still grows); a run remembers its status
    # and the lease it ran under, so runs of a gone holder can be found and closed; run
    # requests let any replica trigger or cancel a run on the replica that runs the sync.
    [
        "ALTER TABLE sync_leases ADD COLUMN token BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE sync_runs ADD COLUMN status TEXT",
        "ALTER TABLE sync_runs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE sync_runs ADD COLUMN lease_token BIGINT",
        "UPDATE sync_runs SET status = {json_text}",
        "CREATE INDEX sync_runs_open ON sync_runs (status) "
        "WHERE status IN ('queued', 'processing', 'reporting')",
        """CREATE TABLE run_requests (
            id {serial_key}, sync_id TEXT NOT NULL, kind TEXT NOT NULL, run_id TEXT,
            full_resync SMALLINT NOT NULL DEFAULT 0, created_at {real} NOT NULL)""",
        "CREATE INDEX run_requests_by_sync ON run_requests (sync_id, id)",
        "CREATE INDEX rejected_rows_by_age ON rejected_rows (created_at)",
        "CREATE INDEX snapshots_by_age ON snapshots (opened_at)",
    ],
    # Version 9: a sync's epoch grows each time removals are planned for it (a snapshot
    # closed, a source table truncated), so every replica that streams its rows knows to drop
    # what its cache says the destination holds.
    ["CREATE TABLE sync_epochs (sync_id TEXT PRIMARY KEY, epoch BIGINT NOT NULL)"],
    # Version 10: PostgreSQL compares a row's sync id and key byte by byte, as SQLite does,
    # instead of by the database's locale: the key index's probes and inserts (a lookup and a
    # record per streamed row) cost less, and keys list in the same order in both stores.
    [
        Only(
            "postgres",
            'ALTER TABLE row_state ALTER COLUMN sync_id TYPE TEXT COLLATE "C", '
            'ALTER COLUMN key TYPE TEXT COLLATE "C"',
        )
    ],
]


def migrations(types: Types, upto: int | None = None) -> list[list[str]]:
    """The statements of each version for one dialect (the first `upto` versions)."""
    versions = []
    for script in _MIGRATIONS[:upto]:
        statements = []
        for step in script:
            if isinstance(step, Only):
                if step.dialect == types.dialect:
                    statements.append(step.sql)
            else:
                statements.append(step.format_map(_fields(types)))
        versions.append(statements)
    return versions


def _fields(types: Types) -> dict[str, str]:
    return {name: getattr(types, name) for name in Types.__slots__}  # type: ignore[attr-defined]


LATEST = len(_MIGRATIONS)
