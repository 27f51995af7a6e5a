"""Kafka security of the service's own clients: one set of options for consumer, producer and
admin, bad combinations refused in one line with exit 2, the password never shown."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from service import cli
from service.app import kafka_client_options, new_consumer
from service.config import Settings

PASSWORD = "s3cret-pa55word"


def ca_bundle() -> str:
    path = ssl.get_default_verify_paths().openssl_cafile
    assert Path(path).is_file(), "the system's CA bundle is needed as a PEM file"
    return path


def test_plaintext_is_the_default_and_carries_no_credentials(
    clean_env: pytest.MonkeyPatch,
) -> None:
    options = kafka_client_options(Settings(kafka_bootstrap_servers="k:9092"))
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


async def test_sasl_ssl_gives_every_client_mechanism_credentials_and_the_ca(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("SYNC_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    clean_env.setenv("SYNC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    clean_env.setenv("SYNC_KAFKA_SASL_USERNAME", "svc")
    clean_env.setenv("SYNC_KAFKA_SASL_PASSWORD", PASSWORD)
    clean_env.setenv("SYNC_KAFKA_SSL_CAFILE", await asyncio.to_thread(ca_bundle))
    # Read outside the event loop, as the service does (the CA file is read).
    settings = await asyncio.to_thread(Settings)
    assert PASSWORD not in repr(settings)
    options = await asyncio.to_thread(kafka_client_options, settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs()  # the bundle was loaded

    # Each client kind accepts them as they are, and keeps them.
    consumer = new_consumer(settings, options)
    assert consumer._client._security_protocol == "SASL_SSL"
    assert consumer._client._sasl_mechanism == "SCRAM-SHA-512"
    producer = AIOKafkaProducer(**options)
    assert producer.client._sasl_plain_password == PASSWORD
    admin = AIOKafkaAdminClient(**options)
    assert admin._client._ssl_context is context
    await consumer.stop()
    await producer.stop()
    await admin.close()


async def test_sasl_plaintext_defaults_to_plain_and_needs_no_ca(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="svc",
        kafka_sasl_password=PASSWORD,
    )
    options = kafka_client_options(settings)
    assert options["sasl_mechanism"] == "PLAIN"
    assert "ssl_context" not in options
    consumer = AIOKafkaConsumer(**options)
    assert consumer._client._sasl_plain_username == "svc"
    await consumer.stop()


def test_ssl_without_a_ca_file_uses_the_system_trust(clean_env: pytest.MonkeyPatch) -> None:
    options = kafka_client_options(Settings(kafka_security_protocol="SSL"))
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SYNC_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SYNC_KAFKA_SECURITY_PROTOCOL"),
        (
            {"SYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SYNC_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "SYNC_KAFKA_SASL_MECHANISM",
        ),
        (
            {"SYNC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SYNC_KAFKA_SASL_USERNAME": "svc"},
            "needs SYNC_KAFKA_SASL_USERNAME and SYNC_KAFKA_SASL_PASSWORD",
        ),
        (
            {"SYNC_KAFKA_SASL_USERNAME": "svc", "SYNC_KAFKA_SASL_PASSWORD": PASSWORD},
            "SYNC_KAFKA_SASL_USERNAME, SYNC_KAFKA_SASL_PASSWORD set, but "
            "SYNC_KAFKA_SECURITY_PROTOCOL is PLAINTEXT",
        ),
        ({"SYNC_KAFKA_SSL_CAFILE": "/etc/hostname"}, "SYNC_KAFKA_SSL_CAFILE set, but"),
        (
            {"SYNC_KAFKA_SECURITY_PROTOCOL": "SSL", "SYNC_KAFKA_SSL_CAFILE": "/nonexistent.pem"},
            "SYNC_KAFKA_SSL_CAFILE: no file at /nonexistent.pem",
        ),
    ],
)
def test_a_bad_combination_is_one_line_and_exit_2_without_the_password(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    expected: str,
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)

    async def must_not_start(*args: object) -> int:
        raise AssertionError("serve() started despite a configuration error")

    clean_env.setattr(cli, "serve", must_not_start)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sync-service: ") and err.count("\n") == 1
    assert expected in err
    assert PASSWORD not in err
