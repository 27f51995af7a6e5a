"""The compose demo profile: `receiver` prints the rows a webhook gets; `producer` sends sample
user change events to Kafka every few seconds. Both run in the sync-service image."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from datetime import UTC, datetime

from aiohttp import web
from aiokafka import AIOKafkaProducer


async def receiver() -> None:
    async def hook(request: web.Request) -> web.Response:
        for row in (await request.json())["rows"]:
            print(
                f"receiver <- {row['op']:<8} key={row['key']:<4} {json.dumps(row['data'])}",
                flush=True,
            )
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", int(os.environ.get("PORT", "8099"))).start()
    await asyncio.Event().wait()


async def producer() -> None:
    kafka = os.environ.get("SYNC_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    topic = os.environ.get("SYNC_EVENTS_TOPICS", "model-changes").split(",")[0]
    p = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await p.start()
    rng = random.Random(7)
    try:
        for i in range(1, 1_000_000):
            key = rng.randint(1, max(i // 2, 1))
            row = {
                "id": key,
                "email": f"user{key}.{rng.randint(1, 9)}@example.com",
                "first_name": "Ada",
                "last_name": f"L{key}",
            }
            event = {
                "modelId": "1",
                "op": "upsert",
                "rows": [row],
                "emittedAt": datetime.now(UTC).isoformat(),
            }
            await p.send_and_wait(topic, json.dumps(event).encode(), key=b"1")
            print(f"producer -> upsert id={key}", flush=True)
            await asyncio.sleep(3)
    finally:
        await p.stop()


if __name__ == "__main__":
    asyncio.run({"receiver": receiver, "producer": producer}[sys.argv[1]]())
