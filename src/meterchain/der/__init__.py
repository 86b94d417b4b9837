"""DER optimisation: plan a site's batteries, loads and PV against prices, and price its orders.

`optimise(problem)` solves the MILP (HiGHS); `RecedingHorizon` re-plans every interval with one
kept model; `run_baseline(problem)` applies the rule-based self-consumption policy it is
measured against; `evaluate(problem, flows)` prices and checks any plan independently;
`orders_for_next_interval(...)` turns a plan into market orders. See docs/der.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# What each public name is imported from. The package loads them on first use, so that importing
# one light module (meterchain.der.site, .weather, .tariffs) does not load the solver (highspy
# takes ~0.4 s to import: a board pays it at its first plan, not at start-up).
_SOURCES = {
    "run_baseline": "baseline",
    "Evaluation": "evaluate",
    "PlanFlows": "evaluate",
    "evaluate": "evaluate",
    "RecedingHorizon": "mpc",
    "advance_load": "mpc",
    "InfeasibleProblem": "optimiser",
    "SolverFailed": "optimiser",
    "optimise": "optimiser",
    "orders_for_next_interval": "orders",
    "BatteryPlan": "schedule",
    "DerSchedule": "schedule",
    "NextInterval": "schedule",
    "Battery": "site",
    "DeferrableLoad": "site",
    "DemandCharge": "site",
    "DerError": "site",
    "DerProblem": "site",
    "InvalidSite": "site",
    "LoadState": "site",
    "Site": "site",
    "SocTarget": "site",
    "ThermalLoad": "site",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'meterchain.der' has no attribute {name!r}")
    return getattr(importlib.import_module(f"meterchain.der.{module}"), name)


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
