"""The kafka destination: one message per row, keyed by primary key, to a configured topic."""

from __future__ import annotations

import asyncio
from typing import Literal

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

from service.core.errors import BatchRejected, DestinationError, RetriableError
from service.core.interfaces import Batch, BatchResult, DestinationWriter

_MAX_REQUEST_BYTES = 1 << 20


class KafkaDestinationConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    #: Defaults to the cluster the service consumes from.
    bootstrap_servers: str | None = Field(default=None, min_length=1)
    #: Removed rows as a row-change event, or as a tombstone (null value) for compacted topics.
    removed_as: Literal["event", "tombstone"] = "event"
    batch_size: int = Field(default=500, ge=1, le=100_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaDestinationConfig:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError("SASL needs saslMechanism, saslUsername and saslPassword")
        return self


class KafkaDestination(DestinationWriter):
    """Delivered means acknowledged by every in-sync replica (acks=all, idempotent producer).
    Rows are grouped per partition, so a batch costs one await per partition, not per row."""

    type_name = "kafka"

    def __init__(self, config: KafkaDestinationConfig, default_bootstrap: str) -> None:
        self._config = config
        self._bootstrap = config.bootstrap_servers or default_bootstrap
        self.batch_size = config.batch_size
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()

    async def open(self) -> None:
        c = self._config
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            enable_idempotence=True,
            acks="all",
            max_batch_size=_MAX_REQUEST_BYTES,
            max_request_size=_MAX_REQUEST_BYTES,
            security_protocol=c.security_protocol,
            sasl_mechanism=c.sasl_mechanism or "PLAIN",
            sasl_plain_username=c.sasl_username,
            sasl_plain_password=c.sasl_password.get_secret_value() if c.sasl_password else None,
            ssl_context=create_ssl_context(cafile=c.ssl_cafile)
            if "SSL" in c.security_protocol
            else None,
        )
        try:
            await producer.start()
        except KafkaConnectionError as exc:
            await producer.stop()
            raise RetriableError(f"Kafka at {self._bootstrap} unreachable: {exc}") from exc
        self._producer = producer

    async def check(self) -> None:
        if self._producer is None:
            raise DestinationError("the kafka destination is not open")
        try:
            await asyncio.wait_for(self._producer.partitions_for(self._config.topic), 10)
        except (KafkaError, TimeoutError) as exc:
            raise RetriableError(f"topic {self._config.topic}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def write(self, batch: Batch) -> BatchResult:
        producer = self._producer
        if producer is None:
            raise DestinationError("the kafka destination is not open")
        topic = self._config.topic
        tombstones = self._config.removed_as == "tombstone"
        try:
            partitions = sorted(await producer.partitions_for(topic))
            builders: dict[int, object] = {}
            sent = []
            for row in batch.rows:
                key = row.key.encode()
                value = None if tombstones and row.op == "removed" else orjson.dumps(row.payload())
                partition = self._partitioner(key, partitions, partitions)
                builder = builders.get(partition)
                if builder is None:
                    builder = builders[partition] = producer.create_batch()
                if builder.append(timestamp=None, key=key, value=value) is None:  # type: ignore[attr-defined]
                    sent.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = builders[partition] = producer.create_batch()
                    if builder.append(timestamp=None, key=key, value=value) is None:  # type: ignore[attr-defined]
                        raise BatchRejected(
                            f"row {row.key} is larger than {_MAX_REQUEST_BYTES} bytes"
                        )
            for partition, builder in builders.items():
                sent.append(await producer.send_batch(builder, topic, partition=partition))
            await asyncio.gather(*sent)
        except KafkaError as exc:
            if getattr(exc, "retriable", False) or isinstance(exc, KafkaConnectionError):
                raise RetriableError(f"{type(exc).__name__}: {exc}") from exc
            raise BatchRejected(f"{type(exc).__name__}: {exc}") from exc
        return BatchResult()
