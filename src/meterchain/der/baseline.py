"""The rule a plain hybrid inverter follows: self-consumption first, then the grid.

It is what the optimiser is measured against, so it is sensible but plans nothing:

1. Deferrable loads start when their window opens and run at full power until done;
   surplus-only loads run on whatever PV surplus over the base load there is, as it comes.
2. A deficit is covered by the battery (down to soc_min), then by imports.
3. A surplus charges the battery (up to soc_max), then is exported up to the export limit;
   the rest is curtailed. When the sell price is negative, a curtailable PV is curtailed
   instead of exporting (the "zero export at negative prices" setting of most inverters).

It ignores prices otherwise, never charges from the grid and ignores the target SoC. A start
SoC below soc_min is only topped up from surplus; above soc_max, it only discharges.
"""

from __future__ import annotations

from meterchain.der.optimiser import InfeasibleProblem
from meterchain.der.schedule import DerSchedule, grid_cost
from meterchain.der.site import DerProblem


def _deferrable_plan(problem: DerProblem) -> dict[str, list[float]]:
    step_h = problem.step_h
    surplus_left = [
        max(0.0, pv - load) for pv, load in zip(problem.pv_w, problem.load_w, strict=True)
    ]
    plan: dict[str, list[float]] = {}
    for load in problem.deferrable_loads:
        power = [0.0] * problem.steps
        remaining_wh = load.energy_wh
        for t in load.window:
            if remaining_wh <= 1e-9:
                break
            available = surplus_left[t] if load.surplus_only else load.max_power_w
            power[t] = min(load.max_power_w, available, remaining_wh / step_h)
            if load.surplus_only:
                surplus_left[t] -= power[t]
            remaining_wh -= power[t] * step_h
        plan[load.name] = power
    return plan


def run_baseline(problem: DerProblem) -> DerSchedule:
    """Simulate the rule over the horizon; raises InfeasibleProblem if it breaks a site limit."""
    steps, step_h, site, battery = problem.steps, problem.step_h, problem.site, problem.site.battery
    deferrable = _deferrable_plan(problem)
    import_limit = site.import_limit_w if site.import_limit_w is not None else float("inf")
    export_limit = site.export_limit_w if site.export_limit_w is not None else float("inf")
    soc = problem.initial_soc_wh
    imports, exports, charges, discharges, socs, curtails = [], [], [], [], [], []
    broken: list[str] = []
    for t in range(steps):
        demand = problem.load_w[t] + sum(power[t] for power in deferrable.values())
        net = demand - problem.pv_w[t]
        charge = discharge = imported = exported = curtailed = 0.0
        if net > 0:
            if battery is not None and soc > battery.soc_min_wh:
                available_wh = (soc - battery.soc_min_wh) * battery.discharge_efficiency
                discharge = min(net, battery.max_discharge_power_w, available_wh / step_h)
                soc -= discharge * step_h / battery.discharge_efficiency
            imported = net - discharge
        else:
            surplus = -net
            if battery is not None and soc < battery.soc_max_wh:
                room_wh = (battery.soc_max_wh - soc) / battery.charge_efficiency
                charge = min(surplus, battery.max_charge_power_w, room_wh / step_h)
                soc += charge * step_h * battery.charge_efficiency
            surplus -= charge
            if site.pv_curtailable and problem.sell_price_per_kwh[t] < 0:
                curtailed = min(surplus, problem.pv_w[t])
            else:
                exported = min(surplus, export_limit)
                curtailed = surplus - exported if site.pv_curtailable else 0.0
            surplus -= exported + curtailed
            if surplus > 1e-6:
                broken.append(f"step {t}: {surplus:.0f} W of PV has nowhere to go")
        if imported > import_limit + 1e-6:
            broken.append(
                f"step {t}: it would import {imported:.0f} W, over the {import_limit:g} W limit"
            )
        imports.append(max(0.0, imported))
        exports.append(max(0.0, exported))
        charges.append(charge)
        discharges.append(discharge)
        curtails.append(max(0.0, curtailed))
        socs.append(soc)
    if broken:
        raise InfeasibleProblem(
            site.name, [f"the rule-based baseline breaks a limit at {b}" for b in broken]
        )
    notes = []
    for load in problem.deferrable_loads:
        delivered_wh = sum(deferrable[load.name]) * step_h
        if delivered_wh < load.energy_wh - 0.5:
            notes.append(
                f"deferrable load {load.name!r} got only {delivered_wh:.0f} of "
                f"{load.energy_wh:g} Wh in its window"
            )
    return DerSchedule(
        method="baseline",
        step_s=problem.step_s,
        battery_capacity_wh=battery.capacity_wh if battery else 0.0,
        import_w=tuple(imports),
        export_w=tuple(exports),
        charge_w=tuple(charges),
        discharge_w=tuple(discharges),
        soc_wh=tuple(socs),
        curtailment_w=tuple(curtails),
        deferrable_w={name: tuple(power) for name, power in deferrable.items()},
        cost=grid_cost(problem, imports, exports),
        notes=tuple(notes),
    )
