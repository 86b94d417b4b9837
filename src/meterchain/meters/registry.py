"""From a URL to a driver: one table, imported lazily so a board loads only what it speaks."""

from __future__ import annotations

import importlib
from typing import Any

from meterchain.meters.base import Meter
from meterchain.meters.retry import DEFAULT_TRIES
from meterchain.meters.url import MeterUrl, parse_meter_url

DRIVERS: dict[str, str] = {
    "modbus": "meterchain.meters.modbus:ModbusMeter",
    "dlms": "meterchain.meters.dlms:DlmsMeter",
    "iec62056-21": "meterchain.meters.iec62056_21:Iec62056Meter",
    "nbr14522": "meterchain.meters.nbr14522:Nbr14522Meter",
}


def open_meter(
    url: str | MeterUrl, *, timeout_s: float = 2.0, retries: int = DEFAULT_TRIES
) -> Meter:
    """The driver for `url`. It connects on first use.

    `timeout_s` bounds each wait for an answer; `retries` is the number of tries in all (the
    first included) before a timeout, corrupt frame or lost connection is raised.
    """
    parsed = url if isinstance(url, MeterUrl) else parse_meter_url(url)
    module_name, _, class_name = DRIVERS[parsed.protocol].partition(":")
    driver: Any = getattr(importlib.import_module(module_name), class_name)
    meter: Meter = driver(parsed, timeout_s=timeout_s, retries=retries)
    return meter
