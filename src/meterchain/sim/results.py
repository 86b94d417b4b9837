"""What a community simulation produced, per household and interval, in exact units.

Money is in integer smallest units of the credit token (cents by default) as the chain counts
it; energy in Wh. The report turns this into JSON and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class HouseholdInterval:
    """One household in one interval: metered flows, market position, and money."""

    interval_start: datetime
    imported_wh: int
    exported_wh: int
    bought_wh: int  # traded to buy in the local market
    sold_wh: int  # traded to sell
    received_wh: int  # bought and delivered: min(bought, imported)
    delivered_wh: int  # sold and delivered: min(sold, exported)
    balance_change_units: int  # on chain (MeterSettled.balanceChange)
    cost_without_market_units: int  # the same flows at the grid tariffs
    load_wh: float  # ground truth from the simulation's physical model
    pv_wh: float
    battery_soc_fraction: float | None
    certified_wh: int = 0  # certificates issued for the meter's export in the interval
    retired_for_wh: int = 0  # certificates of the interval retired in the household's name


@dataclass
class HouseholdResult:
    meter_id: str
    protocol: str
    pv_kwp: float
    battery_kwh: float
    intervals: list[HouseholdInterval] = field(default_factory=list)
    chain_balance_before_units: int = 0
    chain_balance_after_units: int = 0
    # Prepaid supply (prepaid/simulation.py): relay intervals from the physical meter.
    prepaid: bool = False
    relay_off_intervals: int = 0  # intervals the meter's relay was open throughout
    import_wh_while_cut: float = 0.0  # what the meter imported in them: must be 0
    deposited_units: int = 0  # top-ups and the float's loans paid into the market balance
    prepaid_credit_after: float | None = None  # currency units (balance less the float's loans)
    prepaid_state_after: str | None = None
    cut_offs: list[str] = field(default_factory=list)  # when the relay opened
    reconnects: list[str] = field(default_factory=list)
    fund_shares: int = 0  # shares of the community fund held at the end
    fund_revenue_units: int = 0  # fund revenue claimed, smallest units

    @property
    def chain_balance_change_units(self) -> int:
        return self.chain_balance_after_units - self.chain_balance_before_units


@dataclass(frozen=True)
class IntervalMarket:
    """The market in one interval."""

    interval_start: datetime
    price: float | None  # currency units per kWh (pay-as-clear) or volume-weighted (pay-as-bid)
    traded_wh: int
    trades: int
    orders: int
    gas_batch: int
    gas_delivery: int
    gas_certificates: int = 0  # issuing the interval's certificates


@dataclass(frozen=True)
class FundOutcome:
    """The community plant's campaign and revenue (smallest units)."""

    plant_meter_id: str
    address: str
    shares: int
    raised_units: int
    distributed_units: int
    claimed_units: int


@dataclass
class SimulationResult:
    scenario: str
    retail_price: float
    feed_in_price: float
    mechanism: str
    decimals: int
    interval_s: int
    households: list[HouseholdResult]
    market: list[IntervalMarket]
    gas_setup: int = 0
    wall_time_s: float = 0.0
    chain_id: int = 0
    contracts: dict[str, str] = field(default_factory=dict)
    grid_balance_change_units: int = 0
    # intervals the market announced void (issue 14): interval start (Unix s) -> reason
    void_intervals: dict[int, str] = field(default_factory=dict)
    # per meter with an air conditioner: its control, energy and comfort (sim/aircon.py)
    air_conditioners: dict[str, dict[str, object]] = field(default_factory=dict)
    prepaid: dict[str, Any] | None = None  # the run's prepaid summary, when it had any
    fund: FundOutcome | None = None

    @property
    def gas_used(self) -> int:
        """Gas of the market's settlement transactions (batches and deliveries)."""
        return sum(m.gas_batch + m.gas_delivery for m in self.market)
