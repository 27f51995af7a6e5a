"""`sync-service serve` (the real process) meeting a store it can't use: one line on stderr
and a non-zero exit, before any Kafka client starts."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import SYNC_SERVICE

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(60)
"""


def serve_env(db: Path, **extra: str) -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")},
        "SYNC_DATABASE_URL": f"sqlite:///{db}",
        "SYNC_HTTP_PORT": str(port),
        "SYNC_HTTP_HOST": "127.0.0.1",
        # Nothing listens there: a start that got as far as Kafka would fail differently.
        "SYNC_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "SYNC_KAFKA_CONNECT_TIMEOUT_SECONDS": "1",
        **extra,
    }


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYNC_SERVICE, command], check=False, env=env, capture_output=True, text=True, timeout=60
    )


def error_lines(stderr: str) -> list[str]:
    """What the command printed for the operator (log lines have a timestamp first)."""
    return [line for line in stderr.splitlines() if line.startswith("sync-service: ")]


def test_a_sqlite_store_held_by_another_process_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, f"{db}.lock"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        done = run("serve", serve_env(db))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    assert done.returncode == 1, done.stderr
    (line,) = error_lines(done.stderr)
    assert "in use by another process" in line
    assert "Traceback" not in done.stderr


def test_serve_with_migrate_off_refuses_a_newer_schema_with_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    assert run("migrate", serve_env(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    done = run("serve", serve_env(db, SYNC_MIGRATE_ON_START="false"))
    assert done.returncode == 2, done.stderr
    (line,) = error_lines(done.stderr)
    assert line.startswith("sync-service: the store's schema is version 999, newer than")
    assert "Traceback" not in done.stderr
