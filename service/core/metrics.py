"""Every metric the service exports, declared once. Label values come from fixed sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Metrics:
    """Owns one registry, so several service instances (tests) never share counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "sync_events_consumed", "Change events read from Kafka.", ["topic"], registry=r
        )
        self.events_invalid = Counter(
            "sync_events_invalid",
            "Events sent to the DLQ, by reason.",
            ["reason"],
            registry=r,
        )
        self.invalid_ratio = Gauge(
            "sync_events_invalid_ratio",
            "Share of invalid events over the partition's recent events.",
            ["topic", "partition"],
            registry=r,
        )
        self.dlq_alarm = Gauge(
            "sync_dlq_alarm",
            "1 while the partition's invalid share is over SYNC_DLQ_ALERT_RATIO.",
            ["topic", "partition"],
            registry=r,
        )
        self.events_unrouted = Counter(
            "sync_events_unrouted", "Events for a model with no enabled sync.", registry=r
        )
        self.rows_rejected = Counter(
            "sync_rows_rejected",
            "Event rows refused at ingest (for example a missing primary key).",
            ["reason"],
            registry=r,
        )
        self.rows_ingested = Counter(
            "sync_rows_ingested",
            "Rows from events routed to syncs (newest per key and batch).",
            registry=r,
        )
        self.rows_planned = Counter(
            "sync_rows_planned", "Rows planned for sending, by operation.", ["op"], registry=r
        )
        self.rows_unchanged = Counter(
            "sync_rows_unchanged",
            "Rows left unsent because the destination already holds them (at ingest or planning).",
            registry=r,
        )
        self.rows_delivered = Counter(
            "sync_rows_delivered",
            "Rows sent to destinations, by outcome.",
            ["destination_type", "op", "outcome"],
            registry=r,
        )
        self.runs = Counter("sync_runs", "Finished sync runs, by status.", ["status"], registry=r)
        self.pending_rows = Gauge(
            "sync_pending_rows", "Rows waiting to be sent, over all syncs.", registry=r
        )
        self.open_snapshots = Gauge(
            "sync_open_snapshots",
            "Snapshots started (snapshot events seen) but not closed by a `last: true` event.",
            registry=r,
        )
        self.stale_snapshots = Gauge(
            "sync_stale_snapshots",
            "Open snapshots older than SYNC_SNAPSHOT_WARN_SECONDS; they remove nothing.",
            registry=r,
        )
        self.failed_rows = Gauge(
            "sync_failed_rows",
            "Pending rows a destination refused at least once, over all syncs.",
            registry=r,
        )
        self.batch_rows = Histogram(
            "sync_batch_rows", "Rows per destination batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.destination_request_seconds = Histogram(
            "sync_destination_request_seconds",
            "Time of one destination request.",
            ["destination_type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.destination_retries = Counter(
            "sync_destination_retries",
            "Batch deliveries retried after a retriable error.",
            ["destination_type"],
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "sync_destination_concurrency_limit",
            "Requests the adaptive concurrency limit allows in flight, per destination.",
            ["destination_type"],
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "sync_destination_requests_in_flight",
            "Destination requests in flight.",
            ["destination_type"],
            registry=r,
        )
        self.rate_limit_waits = Counter(
            "sync_destination_rate_limit_waits",
            "Requests that waited for the destination's rate limit.",
            ["destination_type"],
            registry=r,
        )
        self.event_to_delivery_seconds = Histogram(
            "sync_event_to_delivery_seconds",
            "Freshness: from an event's emittedAt to the delivery of its row; one observation "
            "per batch, for the batch's oldest row.",
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "sync_consumer_lag",
            "Messages between the consumer's position and the partition's end.",
            ["topic", "partition"],
            registry=r,
        )
        self.store_transaction_seconds = Histogram(
            "sync_store_transaction_seconds",
            "Time of one ingest store transaction (one fetched batch).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # catalog isolation
        self.catalog_unreadable = Gauge(
            "sync_catalog_unreadable_items",
            "Catalog items whose stored document can't be read; each is left out of every read.",
            registry=r,
        )
