"""`retries` means the same for every driver: the number of tries in all, the first included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from meterchain.meters.errors import MeterTimeout
from meterchain.meters.registry import open_meter
from meterchain.meters.sim.server import RunningServer, start_tcp_server
from meterchain.meters.transport import ByteStream

URLS = {
    "modbus": "modbus+tcp://127.0.0.1:{port}?unit=1&map=sdm630",
    "dlms": "dlms+tcp://127.0.0.1:{port}?client=16&server=1",
    "iec62056-21": "iec62056-21+tcp://127.0.0.1:{port}",
    "nbr14522": "nbr14522+tcp://127.0.0.1:{port}",
}


class SilentMeter:
    """A TCP server that accepts every connection, counts it and never says a word."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: RunningServer | None = None

    async def handler(self, stream: ByteStream) -> None:
        self.connections += 1
        await asyncio.sleep(30)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port


@pytest.fixture
async def silent_meter() -> AsyncIterator[SilentMeter]:
    meter = SilentMeter()
    meter.server = await start_tcp_server(meter.handler, "127.0.0.1", 0)
    yield meter
    await meter.server.close()


@pytest.mark.parametrize("protocol", list(URLS))
@pytest.mark.parametrize("tries", [1, 3])
async def test_retries_is_the_number_of_tries_each_on_a_fresh_connection(
    silent_meter: SilentMeter, protocol: str, tries: int
) -> None:
    url = URLS[protocol].format(port=silent_meter.port)
    meter = open_meter(url, timeout_s=0.1, retries=tries)
    try:
        with pytest.raises(MeterTimeout) as caught:
            await meter.read()
    finally:
        await meter.close()
    message = str(caught.value)
    assert url in message
    assert f"after {tries} {'try' if tries == 1 else 'tries'}" in message
    assert silent_meter.connections == tries


def test_the_default_is_three_tries() -> None:
    for protocol, url in URLS.items():
        meter = open_meter(url.format(port=1))
        assert getattr(meter, "retries", None) == 3, protocol


@pytest.mark.parametrize("protocol", list(URLS))
def test_fewer_than_one_try_is_refused(protocol: str) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        open_meter(URLS[protocol].format(port=1), retries=0)
