"""Settings from the environment (prefix SYNC_). A bad value is one clear line and exit 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.destinations.egress import parse_networks
from service.store.base import Retention


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNC_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    events_topics: Annotated[list[str], NoDecode] = Field(default=["model-changes"], min_length=1)
    status_topic: str = Field(default="sync-status", min_length=1)
    dlq_topic: str = Field(default="sync-dlq", min_length=1)
    consumer_group: str = Field(default="sync-service", min_length=1)
    database_url: str = "sqlite:///./sync-service.db"
    http_host: str = "0.0.0.0"
    #: 0 takes any free port; the log's "HTTP on host:port" line names the one bound.
    http_port: int = Field(default=8080, ge=0, le=65535)
    config_file: Path | None = None
    api_tokens: SecretStr | None = None
    api_tokens_file: Path | None = None
    #: Shared secret of the dbt Cloud webhook (POST /api/v1/webhooks/dbt-cloud).
    dbt_cloud_webhook_secret: SecretStr | None = None
    #: Largest accepted API request body, in bytes; larger ones answer 413.
    api_max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    log_level: str = "INFO"

    #: Seconds a stopping service gives the run in flight before interrupting it.
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=60)
    #: Delivery attempts of one batch on retriable errors, and their backoff.
    destination_max_attempts: int = Field(default=6, ge=1, le=100)
    destination_retry_base_seconds: float = Field(default=0.2, gt=0, le=60)
    destination_retry_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: First delay before a continuous sync retries rows that failed; doubles up to 10 min.
    failed_rows_retry_seconds: float = Field(default=10.0, gt=0, le=3600)
    max_concurrent_runs: int = Field(default=16, ge=1, le=1024)
    #: Partitions and replication of the topics the service creates when they are missing.
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    topic_replication_factor: int = Field(default=1, ge=1, le=32)
    #: How long start-up waits for the Kafka cluster to answer before giving up.
    kafka_connect_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: A partition whose recent events (about the last `window`) are more than `ratio`
    #: invalid raises an alarm: an error log line and the sync_dlq_alarm gauge.
    dlq_alert_ratio: float = Field(default=0.5, gt=0, le=1)
    dlq_alert_window: int = Field(default=1000, ge=10, le=1_000_000)
    #: A snapshot still open after this long is reported (log and sync_stale_snapshots).
    snapshot_warn_seconds: float = Field(default=3600.0, gt=0)
    #: Most records per fetch; also the most events one ingest transaction covers.
    fetch_max_records: int = Field(default=2000, ge=1, le=100_000)
    #: Pending rows a run reads from the store at a time (the next page is read while one is
    #: planned and sent); batches are made across pages. A run holds about two pages.
    run_page_rows: int = Field(default=500, ge=1, le=100_000)
    # catalog: workspaces and their topics
    #: The workspace that owns the topics of SYNC_EVENTS_TOPICS; a source's topic belongs to
    #: the source's workspace.
    default_workspace: str = Field(default="1", pattern=r"^[0-9]{1,18}$")
    #: On the service's own cluster, a workspace's Kafka destinations write only topics
    #: starting with this (`{workspaceId}` is replaced by the workspace's id).
    kafka_destination_topic_prefix: str = Field(default="ws-{workspaceId}.", max_length=200)

    # consume pipeline: failure handling, group membership, start-up
    #: Attempts of a batch step that keeps failing (the store answering) before its events
    #: are tried one by one and the failing ones go to the DLQ; and the backoff between them.
    consumer_max_attempts: int = Field(default=5, ge=1, le=100)
    consumer_retry_base_seconds: float = Field(default=0.5, gt=0, le=60)
    consumer_retry_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: How long a partition revocation waits for the batch in flight to be stored and committed.
    rebalance_drain_seconds: float = Field(default=20.0, gt=0, le=600)
    #: Static group membership (Kafka group.instance.id); defaults to POD_NAME where it is set,
    #: so a restarted pod takes its partitions back without a rebalance.
    group_instance_id: str | None = Field(
        default_factory=lambda: os.environ.get("POD_NAME") or None, min_length=1, max_length=249
    )
    #: Apply store migrations when `serve` starts. Off for several replicas: run
    #: `sync-service migrate` once per release instead.
    migrate_on_start: bool = True

    # store: leases, timeouts, retention
    #: A run's sync lease lasts this long unless renewed; renewed every `renew` seconds while
    #: the run lives, so a replica that dies frees its syncs within the TTL.
    lease_ttl_seconds: float = Field(default=15.0, gt=0, le=3600)
    lease_renew_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: Longest wait for one store call (PostgreSQL statement and pool acquire, SQLite busy
    #: wait): a store that is down raises instead of hanging.
    store_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    #: What Store.prune keeps: runs (by age, and at most so many per sync), rejected rows,
    #: and the keys of snapshots that never close.
    retention_runs_days: float = Field(default=30.0, gt=0)
    retention_runs_per_sync: int = Field(default=10_000, ge=1)
    retention_rejected_days: float = Field(default=7.0, gt=0)
    retention_open_snapshot_days: float = Field(default=7.0, gt=0)
    #: How often the store is pruned to the retention above (first a minute after start).
    store_prune_interval_seconds: float = Field(default=3600.0, gt=0, le=86400)
    #: How long a closed (or abandoned) snapshot is remembered, so that its closing message
    #: read again removes nothing.
    retention_closed_snapshot_days: float = Field(default=30.0, gt=0)
    # streaming: continuous syncs send from memory, the store keeps only their outcomes
    #: Off: every row is written pending first and sent by the sync's lease holder.
    streaming: bool = True
    #: Bytes of rows a continuous sync may hold in memory before new ones go to the store.
    stream_queue_bytes: int = Field(default=8 << 20, ge=64 << 10, le=4 << 30)
    #: Bytes of the cache of what destinations hold (synced hashes by key), shared by syncs.
    synced_cache_bytes: int = Field(default=64 << 20, ge=0, le=16 << 30)

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> Settings:
        if self.lease_renew_seconds >= self.lease_ttl_seconds:
            raise ValueError(
                "SYNC_LEASE_RENEW_SECONDS must be less than SYNC_LEASE_TTL_SECONDS "
                f"({self.lease_renew_seconds:g} >= {self.lease_ttl_seconds:g})"
            )
        return self

    def store_retention(self) -> Retention:
        """What Store.prune keeps, from the retention settings."""
        day = 86400.0
        return Retention(
            runs_seconds=self.retention_runs_days * day,
            runs_per_sync=self.retention_runs_per_sync,
            rejected_seconds=self.retention_rejected_days * day,
            open_snapshot_seconds=self.retention_open_snapshot_days * day,
            closed_snapshot_seconds=self.retention_closed_snapshot_days * day,
        )

    @field_validator("events_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
            return value
        if value.startswith(("postgresql://", "postgres://")):
            return value
        raise ValueError("expected sqlite:///path/to/file.db or postgresql://user@host/db")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("kafka_destination_topic_prefix")
    @classmethod
    def _prefix_template(cls, value: str) -> str:
        try:
            value.format(workspaceId="1")
        except (KeyError, IndexError, ValueError):
            raise ValueError("only {workspaceId} may appear in braces") from None
        return value

    # Destinations' egress policy: CIDRs reachable even so (and `unix`: local sockets and
    # files), and CIDRs refused besides loopback, link-local, unspecified and multicast.
    egress_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    egress_deny: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("egress_allow", "egress_deny", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        entries = value.split(",") if isinstance(value, str) else value
        if isinstance(entries, list | tuple):
            entries = [str(e).strip() for e in entries if str(e).strip()]
            parse_networks(entries, "")
        return entries

    # Kafka security of the service's own clients (consumer, producer, admin).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = Field(default=None, min_length=1)
    kafka_sasl_password: SecretStr | None = None
    #: CA bundle (PEM) the brokers' certificates are checked against; the system's otherwise.
    kafka_ssl_cafile: Path | None = None

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        given = [
            name
            for name, value in (
                ("SYNC_KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                ("SYNC_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("SYNC_KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
            )
            if value is not None
        ]
        if not sasl and given:
            raise ValueError(
                f"{', '.join(given)} set, but SYNC_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        if sasl and (self.kafka_sasl_username is None or self.kafka_sasl_password is None):
            raise ValueError(
                f"SYNC_KAFKA_SECURITY_PROTOCOL {protocol} needs SYNC_KAFKA_SASL_USERNAME "
                "and SYNC_KAFKA_SASL_PASSWORD"
            )
        if self.kafka_ssl_cafile is not None:
            if not protocol.endswith("SSL"):
                raise ValueError(
                    f"SYNC_KAFKA_SSL_CAFILE set, but SYNC_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                    "use SSL or SASL_SSL"
                )
            if not self.kafka_ssl_cafile.is_file():
                raise ValueError(f"SYNC_KAFKA_SSL_CAFILE: no file at {self.kafka_ssl_cafile}")
        return self


class SettingsError(Exception):
    """One line naming the setting and what is wrong with it."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        if not error["loc"]:  # a rule over several settings names them itself
            raise SettingsError(str(error.get("ctx", {}).get("error", error["msg"]))) from None
        name = "SYNC_" + str(error["loc"][0]).upper() if error["loc"] else "SYNC_*"
        value = error.get("input")
        secret = any(
            word in name for word in ("TOKEN", "DATABASE_URL", "SECRET", "PASSWORD", "SASL")
        )
        shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"
        raise SettingsError(f"{name}: {error['msg']}{shown}") from None
