"""The `sync-service` command: serve, migrate, demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from service.api.auth import TokenError, load_tokens
from service.api.health import EXIT_REASON, FATAL
from service.app import build_app, open_store
from service.config import Settings, SettingsError, load_settings
from service.resources import ResourcesError, ResourcesFile, parse_resources
from service.store.base import StoreUnavailable

log = logging.getLogger("service")

EXIT_CONFIG = 2


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every rebalance detail at INFO; aiosqlite logs every statement with its
    # parameters at DEBUG, destination secrets included. Neither goes below WARNING.
    for name in ("aiokafka", "aiosqlite"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


#: The collector's first threshold: the hot path allocates and frees many short-lived objects
#: per row, which with Python's default (700) starts a collection every few hundred rows, and
#: full collections walk every object the caches and queues hold (pauses of 100 ms and more).
GC_THRESHOLDS = (50_000, 20, 20)
#: How long the event loop's thread may hold the GIL while SQLite's thread waits for it, in
#: seconds (Python's default is 5 ms). Each statement the store runs needs the GIL to start
#: and to hand back its result; with the default, one transaction of a busy consumer waited
#: several times that long, and the outcome writes held back every batch sent (S1 rose by
#: about 15-25 % at 0.5 ms; 0.2 ms gained nothing more, 1 ms lost most of it).
SWITCH_INTERVAL = 0.0005


async def serve(settings: Settings, resources: ResourcesFile | None, tokens: dict[str, str]) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)
    app = build_app(settings, resources, tokens)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
    except ResourcesError as exc:
        print(f"sync-service: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StoreUnavailable, ConnectionError) as exc:
        # The store opens before HTTP answers: another process holds the SQLite file, or
        # PostgreSQL can't be reached.
        print(f"sync-service: {exc}", file=sys.stderr)
        return 1
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        bound = [s.getsockname()[1] for s in getattr(site._server, "sockets", None) or ()]
        log.info("HTTP on %s:%d", settings.http_host, bound[0] if bound else settings.http_port)
        gc.freeze()  # what start-up built lives on: later collections skip it
        fatal = asyncio.create_task(app[FATAL].wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({fatal, stopped}, return_when=asyncio.FIRST_COMPLETED)
        fatal.cancel()
        stopped.cancel()
        log.info("stopping")
    finally:
        await runner.cleanup()
    if not app[FATAL].is_set():
        return 0
    reason = app[EXIT_REASON]
    if reason.message:
        print(f"sync-service: {reason.message}", file=sys.stderr)
    return reason.code


async def migrate(settings: Settings) -> int:
    store = open_store(settings)
    try:
        await store.open()  # applies every migration not yet recorded
    except (StoreUnavailable, ConnectionError) as exc:
        print(f"sync-service: {exc}", file=sys.stderr)
        return 1
    await store.close()
    print("sync-service: store schema is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sync-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service")
    sub.add_parser("migrate", help="apply store schema migrations and exit")
    sub.add_parser("demo", help="run the service with a demo receiver and sample events")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"sync-service: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level)

    if args.command == "migrate":
        return asyncio.run(migrate(settings))

    try:
        tokens = load_tokens(
            settings.api_tokens.get_secret_value() if settings.api_tokens else None,
            settings.api_tokens_file,
        )
    except TokenError as exc:
        print(f"sync-service: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    resources = None
    if settings.config_file is not None:
        try:
            resources = parse_resources(settings.config_file)
        except ResourcesError as exc:
            print(f"sync-service: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.command == "demo":
        from service.demo import run_demo

        return asyncio.run(run_demo(settings, resources, tokens))
    return asyncio.run(serve(settings, resources, tokens))


if __name__ == "__main__":
    sys.exit(main())
