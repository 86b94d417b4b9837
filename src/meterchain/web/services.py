"""What the web app is built on: the store, and (when running beside a community) the
monitor agent on the bus and the chain actions."""

from __future__ import annotations

from dataclasses import dataclass

from meterchain.agents.monitor import MonitorAgent
from meterchain.store.db import Store
from meterchain.web.chain_actions import ChainActions
from meterchain.web.settings import WebSettings


@dataclass
class WebServices:
    store: Store
    settings: WebSettings
    monitor: MonitorAgent | None = None  # None: no bus, configuration cannot reach boards
    chain: ChainActions | None = None  # None: no chain, meters and tariffs cannot change
