"""S0: a plain aiokafka consumer group member that fetches and orjson-decodes the events,
nothing else. Runs as a process of its own, like the service: `python -m bench.baseline`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from bench.measure import Window, group_joined
from bench.settings import KAFKA, ROOT


class Joined(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.at: float | None = None
        self.cpu: float = 0.0

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        if self.at is None:
            self.at = time.time()
            self.cpu = time.process_time()


def subscribed(topic: str, group: str) -> tuple[AIOKafkaConsumer, Joined]:
    """A consumer of `topic` in `group`, from the earliest offset, committing nothing itself."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=KAFKA,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=5000,
    )
    joined = Joined()
    consumer.subscribe([topic], listener=joined)
    return consumer, joined


async def consume(topic: str, group: str, rows: int, max_records: int) -> dict[str, float]:
    """Wall-clock timestamps of start, join, first fetch and last decode, and CPU seconds."""
    started = time.time()
    consumer, joined = subscribed(topic, group)
    await consumer.start()
    first: float | None = None
    seen = 0
    loads = orjson.loads
    try:
        while seen < rows:
            batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
            if batch and first is None:
                first = time.time()
            for messages in batch.values():
                for message in messages:
                    seen += len(loads(message.value)["rows"])
        done = time.time()
        cpu = time.process_time() - joined.cpu
    finally:
        await consumer.stop()
    assert joined.at is not None and first is not None
    return {"started": started, "joined": joined.at, "first": first, "done": done, "cpu": cpu}


async def measure(
    topic: str, group: str, rows: int, max_records: int, *extra: str, module: str = "bench.baseline"
) -> Window:
    """Runs S0 (or another bare consumer, `module`, given `extra` arguments) in a child process
    and returns its window; the join is seen from the broker, as for the service (the child's
    own rebalance listener is kept as a detail)."""
    spawned = time.time()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", module, topic, group, str(rows), str(max_records), *extra),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    joining = asyncio.create_task(group_joined(group))
    out, _ = await proc.communicate()
    if not joining.done():
        joining.cancel()  # the consumer came and went between two polls
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await joining  # done either way before it is asked for its result
    if proc.returncode != 0:
        raise RuntimeError(f"{module} exited {proc.returncode}")
    t = json.loads(out)
    seen = not joining.cancelled() and joining.exception() is None
    joined = joining.result() if seen else t["joined"]
    window = Window(rows, spawned, joined, t["first"], t["done"], t["cpu"])
    window.details["join_seen_by_broker_poll"] = seen
    window.details["listener_join_minus_broker_join_s"] = round(t["joined"] - joined, 3)
    window.details["seconds_from_consumer_start"] = round(t["done"] - t["started"], 3)
    return window


def child(description: str, consume: Callable[..., Awaitable[dict[str, Any]]], *extra: str) -> None:
    """A measuring child process's entry: `consume(topic, group, rows, max_records, *extra)`
    from its command line, and the times it returns printed as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("rows", type=int)
    parser.add_argument("max_records", type=int)
    for name in extra:
        parser.add_argument(name)
    args = parser.parse_args()
    more = [getattr(args, name) for name in extra]
    found = asyncio.run(consume(args.topic, args.group, args.rows, args.max_records, *more))
    print(json.dumps(found))


def main() -> None:
    child(__doc__ or "", consume)


if __name__ == "__main__":
    main()
