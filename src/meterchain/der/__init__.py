"""DER optimisation: plan a site's battery, loads and PV against prices, and price its orders.

`optimise(problem)` solves the MILP (HiGHS); `run_baseline(problem)` applies the rule-based
self-consumption policy it is measured against; `orders_for_next_interval(...)` turns a plan
into market orders. See docs/der.md.
"""

from meterchain.der.baseline import run_baseline
from meterchain.der.optimiser import InfeasibleProblem, SolverFailed, optimise
from meterchain.der.orders import orders_for_next_interval
from meterchain.der.schedule import DerSchedule, NextInterval
from meterchain.der.site import (
    Battery,
    DeferrableLoad,
    DerError,
    DerProblem,
    InvalidSite,
    Site,
)

__all__ = [
    "Battery",
    "DeferrableLoad",
    "DerError",
    "DerProblem",
    "DerSchedule",
    "InfeasibleProblem",
    "InvalidSite",
    "NextInterval",
    "Site",
    "SolverFailed",
    "optimise",
    "orders_for_next_interval",
    "run_baseline",
]
