"""The kafka destination: one message per row, keyed by primary key, to a configured topic.

Another cluster's bootstrap servers obey the egress policy: each is resolved and checked
before the producer starts (with plain-text listeners the producer is given the checked
addresses, so a name cannot resolve elsewhere in between), and the brokers the cluster then
advertises are checked before the first write. Not covered: with TLS the producer resolves the
bootstrap names itself (certificates name hosts), and connections aiokafka opens to advertised
brokers while starting (for the idempotent producer id) precede the broker check."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from service.core.errors import BatchRejected, DestinationError, RetriableError
from service.core.interfaces import Batch, BatchResult, DestinationWriter
from service.destinations.egress import AddressRefused, EgressPolicy, EgressRefused

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

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str | None) -> str | None:
        if value is not None:
            split_servers(value)
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaDestinationConfig:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError("SASL needs saslMechanism, saslUsername and saslPassword")
        return self


def split_servers(servers: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (IPv6 in brackets) as pairs; ValueError naming a bad entry."""
    pairs: list[tuple[str, int]] = []
    for raw in servers.split(","):
        entry = raw.strip()
        host, sep, port = entry.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if bracketed:
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or (":" in host) != bracketed:
            raise ValueError(f"{entry!r} is not host:port")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"{entry!r}: the port must be 1 to 65535")
        pairs.append((host, int(port)))
    return pairs


def _join_servers(pairs: list[tuple[str, int]]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in pairs)


class KafkaDestination(DestinationWriter):
    """Delivered means acknowledged by every in-sync replica (acks=all, idempotent producer).
    Rows are grouped per partition, so a batch costs one await per partition, not per row."""

    type_name = "kafka"

    def __init__(
        self,
        config: KafkaDestinationConfig,
        default_bootstrap: str,
        egress: EgressPolicy | None = None,
    ) -> None:
        self._config = config
        self._bootstrap = config.bootstrap_servers or default_bootstrap
        #: The service's own cluster (no bootstrapServers) is the operator's choice; any
        #: cluster named in the configuration obeys the policy, as `check_destination` does.
        own = config.bootstrap_servers is None
        self._egress = None if own else (egress or EgressPolicy())
        self._brokers_checked: set[tuple[str, int]] = set()
        self.batch_size = config.batch_size
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()

    async def _checked_bootstrap(self) -> str:
        if self._egress is None:
            return self._bootstrap
        if self._config.ssl_cafile and (why := self._egress.check_path(self._config.ssl_cafile)):
            raise EgressRefused(f"sslCafile: {why}")
        pairs = split_servers(self._bootstrap)
        checked: list[tuple[str, int]] = []
        try:
            for host, port in pairs:
                checked.extend(await self._egress.resolve(host, port))
        except AddressRefused as exc:
            raise EgressRefused(str(exc)) from None
        except OSError as exc:
            raise RetriableError(f"bootstrap server not found: {exc.strerror or exc}") from None
        if "SSL" in self._config.security_protocol:
            return self._bootstrap  # certificates name the hosts: see the module's note
        return _join_servers(checked)

    async def _check_brokers(self, producer: AIOKafkaProducer) -> None:
        """Checks the brokers the cluster advertises that were not checked before."""
        if self._egress is None:
            return
        for broker in producer.client.cluster.brokers():
            if (broker.host, broker.port) in self._brokers_checked:
                continue
            try:
                await self._egress.resolve(broker.host, broker.port)
            except AddressRefused as exc:
                raise EgressRefused(f"advertised broker {broker.nodeId}: {exc}") from None
            except OSError as exc:
                raise RetriableError(f"broker {broker.host}: {exc.strerror or exc}") from None
            self._brokers_checked.add((broker.host, broker.port))

    async def open(self) -> None:
        c = self._config
        bootstrap = await self._checked_bootstrap()
        try:
            ssl_context = (
                create_ssl_context(cafile=c.ssl_cafile) if "SSL" in c.security_protocol else None
            )
        except (OSError, ValueError) as exc:
            raise BatchRejected(f"sslCafile: {type(exc).__name__}") from None
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            max_batch_size=_MAX_REQUEST_BYTES,
            max_request_size=_MAX_REQUEST_BYTES,
            security_protocol=c.security_protocol,
            sasl_mechanism=c.sasl_mechanism or "PLAIN",
            sasl_plain_username=c.sasl_username,
            sasl_plain_password=c.sasl_password.get_secret_value() if c.sasl_password else None,
            ssl_context=ssl_context,
        )
        try:
            await producer.start()
            await self._check_brokers(producer)
        except BaseException as exc:
            # Whatever failed (a bootstrap the client refuses, a refused broker, a cancel),
            # the producer's connections and tasks go with it; its own error is not ours.
            with contextlib.suppress(Exception):
                await producer.stop()
            if isinstance(exc, KafkaConnectionError):
                raise RetriableError(f"Kafka at {self._bootstrap} unreachable: {exc}") from exc
            raise
        await self.close()  # opened again: the producer before goes
        self._producer = producer

    async def check(self, timeout_seconds: float = 5.0) -> None:
        if self._producer is None:
            raise DestinationError("the kafka destination is not open")
        try:
            await asyncio.wait_for(
                self._producer.partitions_for(self._config.topic), timeout_seconds
            )
            await self._check_brokers(self._producer)
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
        if self._egress is not None and self._producer is not None:
            await self._check_brokers(producer)  # metadata may advertise new brokers
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
