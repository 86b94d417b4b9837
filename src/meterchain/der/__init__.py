"""DER optimisation: plan a site's batteries, loads and PV against prices, and price its orders.

`optimise(problem)` solves the MILP (HiGHS); `RecedingHorizon` re-plans every interval with one
kept model; `run_baseline(problem)` applies the rule-based self-consumption policy it is
measured against; `evaluate(problem, flows)` prices and checks any plan independently;
`orders_for_next_interval(...)` turns a plan into market orders. See docs/der.md.
"""

from meterchain.der.baseline import run_baseline
from meterchain.der.evaluate import Evaluation, PlanFlows, evaluate
from meterchain.der.mpc import RecedingHorizon, advance_load
from meterchain.der.optimiser import InfeasibleProblem, SolverFailed, optimise
from meterchain.der.orders import orders_for_next_interval
from meterchain.der.schedule import BatteryPlan, DerSchedule, NextInterval
from meterchain.der.site import (
    Battery,
    DeferrableLoad,
    DemandCharge,
    DerError,
    DerProblem,
    InvalidSite,
    LoadState,
    Site,
    SocTarget,
    ThermalLoad,
)

__all__ = [
    "Battery",
    "BatteryPlan",
    "DeferrableLoad",
    "DemandCharge",
    "DerError",
    "DerProblem",
    "DerSchedule",
    "Evaluation",
    "InfeasibleProblem",
    "InvalidSite",
    "LoadState",
    "NextInterval",
    "PlanFlows",
    "RecedingHorizon",
    "Site",
    "SocTarget",
    "SolverFailed",
    "ThermalLoad",
    "advance_load",
    "evaluate",
    "optimise",
    "orders_for_next_interval",
    "run_baseline",
]
