"""The egress policy: refused addresses are refused when a destination is saved (literal
addresses) and on every connection (names, after resolution); a real listener on each refused
address receives nothing, through writes and through `probe_destination`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from service.core.errors import DestinationError
from service.core.interfaces import Batch
from service.core.models import Destination
from service.core.rows import RowChange
from service.destinations.egress import (
    AddressRefused,
    EgressPolicy,
    EgressRefused,
    EgressResolver,
)
from service.destinations.kafka import KafkaDestination
from service.destinations.registry import (
    DestinationContext,
    check_destination,
    open_destination,
    probe_destination,
    validate_configuration,
)
from service.destinations.webhook import RedirectRefused
from tests.support import LOCAL_ONLY, Listener

DEFAULT = EgressPolicy()


@pytest.fixture(params=["127.0.0.2", "::1"])
async def refused(request: pytest.FixtureRequest) -> AsyncIterator[Listener]:
    """A listener on an address the policy refuses even with 127.0.0.1 allowed."""
    try:
        listener = await Listener(request.param).start()
    except OSError:
        pytest.skip(f"{request.param} is not available on this host")
    yield listener
    await listener.stop()


@pytest.fixture
async def local() -> AsyncIterator[Listener]:
    listener = await Listener("127.0.0.1").start()
    yield listener
    await listener.stop()


def destination(kind: str, **configuration: Any) -> Destination:
    return Destination(id="1", name="d", slug="d", type=kind, configuration=configuration)


def batch() -> Batch:
    return Batch("1", "1", "1-1", [RowChange("added", "1", {"id": 1}, 1)])


async def write_through(kind: str, policy: EgressPolicy, **configuration: Any) -> None:
    writer = open_destination(
        destination(kind, **configuration), DestinationContext("127.0.0.1:9092", policy)
    )
    try:
        await writer.open()
        await writer.write(batch())
    finally:
        await writer.close()


# --- the policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.2", "loopback"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.2", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("::127.0.0.2", "loopback"),  # IPv4-compatible
        ("2002:7f00:2::1", "loopback"),  # 6to4 of 127.0.0.2
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("fd00:ec2::254", "metadata"),
    ],
)
def test_refused_by_default(address: str, reason: str) -> None:
    why = DEFAULT.refusal(address)
    assert why is not None
    assert reason in why


@pytest.mark.parametrize("address", ["93.184.216.34", "10.1.2.3", "192.168.0.1", "2606:4700::1"])
def test_public_and_private_addresses_pass_by_default(address: str) -> None:
    assert DEFAULT.refusal(address) is None


def test_allow_and_deny_lists_most_specific_wins() -> None:
    policy = EgressPolicy.from_settings(
        ["127.0.0.1/32", "10.9.0.0/16"], ["10.0.0.0/8", "93.184.216.34"]
    )
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None  # the same host
    assert policy.refusal("127.0.0.2") is not None
    assert policy.refusal("10.1.1.1") == "an address in SYNC_EGRESS_DENY"
    assert policy.refusal("10.9.1.1") is None
    assert policy.refusal("93.184.216.34") == "an address in SYNC_EGRESS_DENY"
    assert not policy.local_paths
    assert EgressPolicy.from_settings(["unix"]).local_paths
    with pytest.raises(ValueError, match="SYNC_EGRESS_DENY: 'nope' is not a CIDR"):
        EgressPolicy.from_settings([], ["nope"])


# --- refused when saved ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:8080/hook",
        "http://[::1]:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.2]/hook",
        "http://0x7f.2/hook",  # normalized to 127.0.0.2 before anything connects
        "http://2130706434/hook",
        "http://[fe80::1%25eth0]/hook",
    ],
)
def test_a_literal_refused_address_is_named_at_save_time(url: str) -> None:
    try:
        validate_configuration("webhook", {"url": url})
    except ValidationError:
        return  # refused by validation already
    refused = check_destination("webhook", {"url": url}, LOCAL_ONLY)
    assert set(refused) == {"url"}
    assert "refused by the egress policy" in refused["url"]


def test_a_url_with_userinfo_is_refused_at_save_time() -> None:
    with pytest.raises(ValidationError, match="user:password"):
        validate_configuration("webhook", {"url": "http://127.0.0.2:1@127.0.0.1:1/"})


def test_names_and_allowed_addresses_pass_at_save_time() -> None:
    for url in ("http://localhost:8080/hook", "http://127.0.0.1:8080/", "https://example.com/"):
        assert check_destination("webhook", {"url": url}, LOCAL_ONLY) == {}


@pytest.mark.parametrize(
    ("dsn", "why"),
    [
        ("postgresql://u:p@127.0.0.2:5432/db", "loopback"),
        ("postgresql://u:p@127.0.0.1:5432,[::1]:5433/db", "loopback"),
        ("postgresql://u:p@169.254.169.254/db", "link-local"),
        ("postgresql://u:p@/db", "local paths"),
        ("postgresql://u:p@%2Fvar%2Frun%2Fpostgresql/db", "local paths"),
        ("postgresql://u:p@example.com/db?host=/tmp", "local paths"),
        ("postgresql://u:p@example.com/db?passfile=/etc/passwd", "local paths"),
        ("postgresql://u:p@example.com/db?service=store", "local paths"),
        ("postgresql://u:p@example.com/db?sslmode=verify-ca&sslrootcert=/etc/ssl/x", "local"),
    ],
)
def test_postgres_dsn_hosts_and_paths_at_save_time(dsn: str, why: str) -> None:
    refused = check_destination("postgres", {"dsn": dsn, "table": "t"}, LOCAL_ONLY)
    assert set(refused) == {"dsn"}
    assert why in refused["dsn"]
    assert "p@" not in refused["dsn"]


def test_postgres_dsn_paths_pass_when_allowed() -> None:
    policy = EgressPolicy.from_settings(["unix"])
    assert check_destination("postgres", {"dsn": "postgresql://u@/db", "table": "t"}, policy) == {}


@pytest.mark.parametrize(
    ("servers", "why"),
    [
        ("127.0.0.2:9092", "loopback"),
        ("example.com:9092,[::1]:9092", "loopback"),
        ("169.254.169.254:9092", "link-local"),
    ],
)
def test_kafka_bootstrap_servers_at_save_time(servers: str, why: str) -> None:
    configuration = {"topic": "t", "bootstrapServers": servers}
    validate_configuration("kafka", configuration)
    refused = check_destination("kafka", configuration, LOCAL_ONLY)
    assert why in refused["bootstrapServers"]


@pytest.mark.parametrize("servers", ["a:b:c", "host:99999", "host", "[::1:9092"])
def test_kafka_bootstrap_servers_must_be_host_port(servers: str) -> None:
    with pytest.raises(ValidationError, match=r"host:port|port must be"):
        validate_configuration("kafka", {"topic": "t", "bootstrapServers": servers})


def test_kafka_ca_file_is_a_local_path() -> None:
    configuration = {
        "topic": "t",
        "bootstrapServers": "example.com:9093",
        "securityProtocol": "SSL",
        "sslCafile": "/etc/shadow",
    }
    assert "sslCafile" in check_destination("kafka", configuration, LOCAL_ONLY)


def test_header_values_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValidationError, match="line break"):
        validate_configuration(
            "webhook", {"url": "https://example.com/", "headers": {"X-A": "a\r\nHost: b"}}
        )


# --- refused when connecting: a listener on the address receives nothing --------------------


async def test_webhook_to_a_refused_address_connects_nowhere(refused: Listener) -> None:
    url = f"http://{refused.netloc}/hook"
    with pytest.raises(EgressRefused, match="refused by the egress policy"):
        await write_through("webhook", LOCAL_ONLY, url=url)
    error = await probe_destination(
        destination("webhook", url=url), DestinationContext("127.0.0.1:9092", LOCAL_ONLY)
    )
    assert error is not None
    assert "refused by the egress policy" in error
    assert refused.connections == 0


async def test_a_name_resolving_to_loopback_is_refused_after_resolution(local: Listener) -> None:
    url = f"http://localhost:{local.port}/hook"
    with pytest.raises(EgressRefused, match="localhost"):
        await write_through("webhook", DEFAULT, url=url)
    assert await probe_destination(destination("webhook", url=url), DestinationContext("x:1"))
    assert local.connections == 0
    await write_through("webhook", LOCAL_ONLY, url=url)  # the same name, allowed
    assert local.connections == 1


async def test_cloud_metadata_address_is_refused_without_connecting() -> None:
    with pytest.raises(EgressRefused, match="link-local"):
        await write_through("webhook", LOCAL_ONLY, url="http://169.254.169.254/latest/meta-data/")


class Rebinding(AbstractResolver):
    """A name that resolved to a public address when saved and to loopback now."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_drops_refused_addresses_and_refuses_when_none_is_left() -> None:
    mixed = EgressResolver(DEFAULT, Rebinding("127.0.0.2", "93.184.216.34"))
    assert [r["host"] for r in await mixed.resolve("rebind.example", 80)] == ["93.184.216.34"]
    with pytest.raises(AddressRefused, match="loopback"):
        await EgressResolver(DEFAULT, Rebinding("127.0.0.2")).resolve("rebind.example", 80)


async def test_postgres_to_a_refused_address_connects_nowhere(refused: Listener) -> None:
    dsn = f"postgresql://u:secret-pw@{refused.netloc}/db"
    with pytest.raises(EgressRefused) as caught:
        await write_through("postgres", LOCAL_ONLY, dsn=dsn, table="t")
    assert "secret-pw" not in str(caught.value)
    error = await probe_destination(
        destination("postgres", dsn=dsn, table="t"), DestinationContext("x:1", LOCAL_ONLY)
    )
    assert error is not None
    assert "egress policy" in error
    assert "secret-pw" not in error
    assert refused.connections == 0


async def test_postgres_name_resolving_to_loopback_and_local_sockets_are_refused(
    local: Listener,
) -> None:
    for dsn in (
        f"postgresql://u:pw@localhost:{local.port}/db",
        "postgresql://u:pw@/db",
        f"postgresql://u:pw@example.invalid/db?host=/tmp&port={local.port}",
    ):
        with pytest.raises(EgressRefused):
            await write_through("postgres", DEFAULT, dsn=dsn, table="t")
    assert local.connections == 0


async def test_kafka_bootstrap_at_a_refused_address_connects_nowhere(refused: Listener) -> None:
    configuration = {"topic": "t", "bootstrapServers": refused.netloc}
    with pytest.raises(EgressRefused, match="egress policy"):
        await write_through("kafka", LOCAL_ONLY, **configuration)
    error = await probe_destination(
        destination("kafka", **configuration), DestinationContext("127.0.0.1:9092", LOCAL_ONLY)
    )
    assert error is not None
    assert "egress policy" in error
    assert refused.connections == 0


async def test_kafka_advertised_brokers_are_checked() -> None:
    """A cluster reached through an allowed bootstrap server that advertises a broker at a
    refused address: refused before anything is produced to it."""

    @dataclass
    class Broker:
        nodeId: int
        host: str
        port: int

    class Cluster:
        def brokers(self) -> list[Broker]:
            return [Broker(1, "127.0.0.1", 9092), Broker(2, "127.0.0.2", 9092)]

    class Producer:
        client = type("Client", (), {"cluster": Cluster()})()

    config = validate_configuration("kafka", {"topic": "t", "bootstrapServers": "127.0.0.1:1"})
    writer = KafkaDestination(config, "own:9092", LOCAL_ONLY)  # type: ignore[arg-type]
    with pytest.raises(EgressRefused, match="advertised broker 2"):
        await writer._check_brokers(Producer())  # type: ignore[arg-type]


# --- redirects ------------------------------------------------------------------------------


async def test_a_redirect_to_a_refused_address_is_not_followed(refused: Listener) -> None:
    target = f"http://{refused.netloc}/hook"

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": target})

    app = web.Application()
    app.router.add_route("*", "/hook", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = f"http://127.0.0.1:{port}/hook"
        with pytest.raises(RedirectRefused) as caught:
            await write_through("webhook", LOCAL_ONLY, url=url)
        assert "307" in str(caught.value)
        assert target in str(caught.value)
        assert caught.value.fatal
        error = await probe_destination(
            destination("webhook", url=url), DestinationContext("x:1", LOCAL_ONLY)
        )
        assert error is not None
        assert "307" in error
    finally:
        await runner.cleanup()
    assert refused.connections == 0


async def test_probe_answers_within_its_timeout() -> None:
    """A listener that accepts and never answers: the probe gives up after its timeout."""
    hung: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await probe_destination(
            destination("webhook", url=f"http://127.0.0.1:{port}/", timeoutSeconds=600),
            DestinationContext("x:1", LOCAL_ONLY),
            timeout_seconds=0.5,
        )
        assert error is not None
        assert error.startswith("timed out")
    finally:
        for writer in hung:
            writer.close()
        server.close()
        await server.wait_closed()


def test_egress_refused_is_a_fatal_destination_error() -> None:
    assert issubclass(EgressRefused, DestinationError)
    assert EgressRefused("x").fatal
