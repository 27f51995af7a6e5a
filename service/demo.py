"""`sync-service demo`: the service, a webhook receiver that prints what it gets, and a
producer of sample change events, in one process. Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.app import build_app
from service.config import Settings
from service.resources import ResourcesFile, parse_resources

RECEIVER_PORT = 8099
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resources.yaml"
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]


def _say(text: str) -> None:
    print(text, flush=True)


async def _receiver() -> web.AppRunner:
    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        for row in body["rows"]:
            data = orjson.dumps(row["data"]).decode()
            _say(f"  receiver <- {row['op']:<8} key={row['key']:<4} {data}")
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", RECEIVER_PORT).start()
    return runner


def _user(i: int, rng: random.Random) -> dict[str, object]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "id": i,
        "email": f"{first.lower()}.{last.lower()}{i}@example.com",
        "first_name": first,
        "last_name": last,
        "plan": rng.choice(["free", "pro", "team"]),
        "last_seen": datetime.now(UTC).isoformat(),  # not mapped: changes to it send nothing
    }


async def _produce(settings: Settings, model_id: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    rng = random.Random(7)
    topic = settings.events_topics[0]

    async def send(op: str, rows: list[dict[str, object]], note: str) -> None:
        _say(f"producer -> {op} {len(rows)} row(s): {note}")
        event = {
            "modelId": model_id,
            "op": op,
            "rows": rows,
            "emittedAt": datetime.now(UTC).isoformat(),
        }
        await producer.send_and_wait(topic, orjson.dumps(event), key=model_id.encode())

    try:
        users = {i: _user(i, rng) for i in range(1, 6)}
        await send("upsert", list(users.values()), "five new users")
        await asyncio.sleep(2)
        users[2] = {**users[2], "email": "grace@navy.example.com"}
        await send("upsert", [users[2]], "user 2 changes email")
        await asyncio.sleep(2)
        users[3] = {**users[3], "last_seen": datetime.now(UTC).isoformat()}
        await send("upsert", [users[3]], "user 3: only an unmapped column changes (nothing sent)")
        await asyncio.sleep(2)
        await send("delete", [{"id": 4}], "user 4 deleted")
        for i in itertools.count(6):
            if stop.is_set():
                return
            await asyncio.sleep(3)
            if rng.random() < 0.6:
                users[i] = _user(i, rng)
                await send("upsert", [users[i]], f"new user {i}")
            else:
                k = rng.choice(list(users))
                users[k] = {
                    **users[k],
                    "plan": rng.choice(["free", "pro", "team"]),
                    "first_name": rng.choice(FIRST),
                }
                await send("upsert", [users[k]], f"user {k} edited")
    finally:
        await producer.stop()


async def run_demo(
    settings: Settings, resources: ResourcesFile | None, tokens: dict[str, str]
) -> int:
    if resources is None:
        settings = settings.model_copy(update={"config_file": EXAMPLE})
        resources = parse_resources(EXAMPLE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    receiver = await _receiver()
    service = web.AppRunner(
        build_app(settings, resources, tokens), handle_signals=False, access_log=None
    )
    await service.setup()
    await web.TCPSite(service, settings.http_host, settings.http_port).start()
    _say(
        f"demo: service on :{settings.http_port} (metrics at /metrics), receiver on "
        f":{RECEIVER_PORT}; Ctrl-C stops"
    )
    model_id = resources.syncs[0].model_id if resources.syncs else "1"
    producer = asyncio.create_task(_produce(settings, model_id, stop))
    try:
        await stop.wait()
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        await service.cleanup()
        await receiver.cleanup()
        _say("demo: stopped")
    return 0


if __name__ == "__main__":
    sys.exit("run it as: sync-service demo")
