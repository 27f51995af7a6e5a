"""A Kafka destination that fails to open leaves no producer running, whatever the failure."""

from __future__ import annotations

import gc
import warnings

import pytest

from service.destinations.kafka import KafkaDestination, KafkaDestinationConfig


@pytest.mark.parametrize("bootstrap", ["a:b:c", "127.0.0.1:99999", "[::1"])
async def test_a_bootstrap_the_client_refuses_stops_the_producer(bootstrap: str) -> None:
    # The service's own cluster (no bootstrapServers) is not checked before the client sees it.
    writer = KafkaDestination(KafkaDestinationConfig(topic="t"), bootstrap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception) as raised:
            await writer.open()
        assert not isinstance(raised.value, AssertionError)
        del raised  # its traceback holds the producer's frame
        gc.collect()
    unclosed = [w for w in caught if "Unclosed AIOKafkaProducer" in str(w.message)]
    assert unclosed == []
    await writer.close()  # nothing open: a no-op
