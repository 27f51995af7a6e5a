"""Sync leases: one holder per sync at a time, with a fencing token that grows with every
acquisition. The same statements for both dialects."""

from __future__ import annotations

#: Taken when free, expired or already ours; a released lease keeps its row (expired) so the
#: token keeps growing.
ACQUIRE = """
INSERT INTO sync_leases (sync_id, owner, expires_at, token) VALUES (?, ?, ?, 1)
ON CONFLICT (sync_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,
  token = sync_leases.token + 1
WHERE sync_leases.owner = excluded.owner OR sync_leases.expires_at < ?
RETURNING token
"""
RENEW = "UPDATE sync_leases SET expires_at = ? WHERE sync_id = ? AND owner = ? AND token = ?"
RELEASE = "UPDATE sync_leases SET expires_at = 0 WHERE sync_id = ? AND owner = ?"
RELEASE_TOKEN = RELEASE + " AND token = ?"
#: Whether the lease is still (owner, token); PostgreSQL keeps the row locked until the
#: writing transaction ends, so nobody takes the lease in between.
HOLDS = "SELECT 1 FROM sync_leases WHERE sync_id = ? AND owner = ? AND token = ?{for_share}"
#: A process that owns the store alone (SQLite's lock file) takes over every lease.
EXPIRE_ALL = "UPDATE sync_leases SET expires_at = 0"
