"""Price and check any plan against its problem, trusting nothing the planner said about it.

A plan is only its power flows per step (`PlanFlows`): what the site imports, exports and
curtails, what each battery and each load draws. `evaluate` recomputes from those flows alone
every state (SoC from the efficiencies, room temperatures from the 1R1C physics), every cost
(energy at the tariffs, demand charges, wear, loads' prices, start-ups, discomfort) and every
constraint of the problem, and lists what the plan breaks. The benchmark uses it to compare
meterchain's plans with EMHASS's on equal terms; the tests use it to check the optimiser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meterchain.der.formulation import program_of
from meterchain.der.schedule import DerSchedule
from meterchain.der.site import Battery, DeferrableLoad, DerProblem
from meterchain.der.thermal import discomfort_k_h, temperatures_c

POWER_TOLERANCE_W = 1.0  # 1 W: what a plan rounded for a set-point may be off by
ENERGY_TOLERANCE_WH = 1.0


@dataclass(frozen=True)
class PlanFlows:
    """A plan as power flows per step (W, averages over each step)."""

    import_w: Sequence[float]
    export_w: Sequence[float]
    charge_w: Mapping[str, Sequence[float]] = field(default_factory=dict)  # per battery
    discharge_w: Mapping[str, Sequence[float]] = field(default_factory=dict)
    deferrable_w: Mapping[str, Sequence[float]] = field(default_factory=dict)
    thermal_w: Mapping[str, Sequence[float]] = field(default_factory=dict)
    curtailment_w: Sequence[float] | None = None

    @classmethod
    def of(cls, schedule: DerSchedule) -> PlanFlows:
        """The flows of a meterchain plan (and nothing else it reports)."""
        return cls(
            import_w=schedule.import_w,
            export_w=schedule.export_w,
            charge_w={b.name: b.charge_w for b in schedule.batteries},
            discharge_w={b.name: b.discharge_w for b in schedule.batteries},
            deferrable_w=dict(schedule.deferrable_w),
            thermal_w=dict(schedule.thermal_w),
            curtailment_w=schedule.curtailment_w,
        )


@dataclass(frozen=True)
class Evaluation:
    """What a plan costs and what it breaks."""

    energy_cost: float
    demand_cost: float
    wear_cost: float
    load_price_cost: float
    startup_cost: float
    discomfort_cost: float
    discomfort_k_h: float
    target_shortfall_wh: float
    end_soc_wh: Mapping[str, float]
    violations: tuple[str, ...]

    @property
    def cost(self) -> float:
        """Everything the plan costs its owner, discomfort priced as the owner priced it."""
        return (
            self.energy_cost
            + self.demand_cost
            + self.wear_cost
            + self.load_price_cost
            + self.startup_cost
            + self.discomfort_cost
        )

    @property
    def feasible(self) -> bool:
        return not self.violations


def evaluate(problem: DerProblem, flows: PlanFlows) -> Evaluation:
    """Recompute the plan's states and costs from its flows, and list every broken rule."""
    steps, h = problem.steps, problem.step_h
    broken: list[str] = []
    imports = _series("import_w", flows.import_w, steps, broken)
    exports = _series("export_w", flows.export_w, steps, broken)
    curtailed = (
        _series("curtailment_w", flows.curtailment_w, steps, broken)
        if flows.curtailment_w is not None
        else [0.0] * steps
    )
    batteries = problem.site.all_batteries
    charges = {
        b.name: _series(
            f"{b.name} charge", flows.charge_w.get(b.name, [0.0] * steps), steps, broken
        )
        for b in batteries
    }
    discharges = {
        b.name: _series(
            f"{b.name} discharge", flows.discharge_w.get(b.name, [0.0] * steps), steps, broken
        )
        for b in batteries
    }
    loads = {
        d.name: _series(d.name, flows.deferrable_w.get(d.name, [0.0] * steps), steps, broken)
        for d in problem.deferrable_loads
    }
    thermal = {
        t.name: _series(t.name, flows.thermal_w.get(t.name, [0.0] * steps), steps, broken)
        for t in problem.thermal_loads
    }
    for name, given in (("battery", flows.charge_w), ("load", flows.deferrable_w)):
        known = {b.name for b in batteries} if name == "battery" else set(loads) | set(thermal)
        for extra in set(given) - known:
            broken.append(f"the plan has a {name} {extra!r} the problem does not")

    for t in range(steps):
        supply = problem.pv_w[t] - curtailed[t] + imports[t]
        supply += sum(discharges[b.name][t] - charges[b.name][t] for b in batteries)
        demand = problem.load_w[t] + exports[t]
        demand += sum(p[t] for p in loads.values()) + sum(p[t] for p in thermal.values())
        if abs(supply - demand) > POWER_TOLERANCE_W:
            broken.append(f"step {t}: energy does not balance ({supply - demand:+.1f} W)")
        if imports[t] > problem.import_limit_at(t) + POWER_TOLERANCE_W:
            broken.append(f"step {t}: imports {imports[t]:.0f} W over the limit")
        if exports[t] > problem.export_limit_at(t) + POWER_TOLERANCE_W:
            broken.append(f"step {t}: exports {exports[t]:.0f} W over the limit")
        most = problem.pv_w[t] if problem.site.pv_curtailable else 0.0
        if curtailed[t] > most + POWER_TOLERANCE_W:
            broken.append(f"step {t}: curtails {curtailed[t]:.0f} W of {most:.0f} W")

    end_soc, wear, shortfall = {}, 0.0, 0.0
    for index, battery in enumerate(batteries):
        soc, more_wear, short = _battery(
            problem, index, battery, charges[battery.name], discharges[battery.name], broken
        )
        end_soc[battery.name] = soc
        wear += more_wear
        shortfall += short
    _grid_rules(problem, imports, exports, curtailed, charges, discharges, loads, thermal, broken)

    load_price = startup = 0.0
    for load in problem.deferrable_loads:
        power = loads[load.name]
        load_price += sum(load.price_at(t) * p for t, p in enumerate(power)) * h / 1000.0
        starts = _check_load(problem, load, power, broken)
        startup += load.startup_cost * starts

    discomfort_cost = discomfort_total = 0.0
    for machine in problem.thermal_loads:
        power = thermal[machine.name]
        for t, p in enumerate(power):
            if p > machine.max_power_w + POWER_TOLERANCE_W:
                broken.append(f"{machine.name!r} step {t}: draws {p:.0f} W, above its maximum")
        k_h = discomfort_k_h(machine, temperatures_c(machine, power, h), h)
        discomfort_total += k_h
        discomfort_cost += machine.discomfort_per_kelvin_hour * k_h

    demand_cost = 0.0
    for charge in problem.demand_charges:
        counted = [imports[t] / 1000.0 for t in range(steps) if charge.counts(t)]
        demand_cost += charge.billed_cost(max([charge.peak_so_far_kw, *counted]))
    energy = sum(
        (problem.buy_price_per_kwh[t] * imports[t] - problem.sell_price_per_kwh[t] * exports[t])
        * h
        / 1000.0
        for t in range(steps)
    )
    if problem.strict_target and shortfall > ENERGY_TOLERANCE_WH:
        broken.append(f"the strict SoC target is missed by {shortfall:.0f} Wh")
    return Evaluation(
        energy_cost=energy,
        demand_cost=demand_cost,
        wear_cost=wear,
        load_price_cost=load_price,
        startup_cost=startup,
        discomfort_cost=discomfort_cost,
        discomfort_k_h=discomfort_total,
        target_shortfall_wh=shortfall,
        end_soc_wh=end_soc,
        violations=tuple(broken),
    )


def _series(name: str, values: Sequence[float], steps: int, broken: list[str]) -> list[float]:
    out = [float(v) for v in values]
    if len(out) != steps:
        broken.append(f"{name} has {len(out)} values for {steps} steps")
        out = (out + [0.0] * steps)[:steps]
    for t, v in enumerate(out):
        if v < -POWER_TOLERANCE_W:
            broken.append(f"{name} step {t}: negative ({v:.1f} W)")
    return [max(0.0, v) for v in out]


def _battery(
    problem: DerProblem,
    index: int,
    battery: Battery,
    charge: list[float],
    discharge: list[float],
    broken: list[str],
) -> tuple[float, float, float]:
    """Step the SoC through the plan; returns the end SoC, the wear and the target shortfall."""
    h = problem.step_h
    soc = problem.initial_soc_wh_of(index)
    floor = min(battery.soc_min_wh, soc) - ENERGY_TOLERANCE_WH
    ceiling = max(battery.soc_max_wh, soc) + ENERGY_TOLERANCE_WH
    label = f"battery {battery.name!r}"
    targets: dict[int, float] = {}
    if problem.target_soc_fraction is not None:
        targets[problem.steps - 1] = problem.target_soc_fraction * battery.capacity_wh
    for target in problem.soc_targets:
        if target.battery in (None, battery.name):
            wanted = target.soc_fraction * battery.capacity_wh
            targets[target.step] = max(targets.get(target.step, 0.0), wanted)
    shortfall = 0.0
    previous_power = (
        problem.initial_battery_power_w[index]
        if problem.initial_battery_power_w is not None
        else None
    )
    for t in range(problem.steps):
        c, d = charge[t], discharge[t]
        if c > battery.max_charge_w_at(soc) + POWER_TOLERANCE_W:
            broken.append(f"{label} step {t}: charges {c:.0f} W, above what it takes at its SoC")
        if d > battery.max_discharge_power_w + POWER_TOLERANCE_W:
            broken.append(f"{label} step {t}: discharges {d:.0f} W, above its maximum")
        if min(c, d) > POWER_TOLERANCE_W:
            broken.append(f"{label} step {t}: charges and discharges at once")
        power = c - d
        ramp = battery.ramp_limit_w_per_h
        if ramp is not None and previous_power is not None:
            too_fast = abs(power - previous_power) > ramp * h + POWER_TOLERANCE_W
            if too_fast:
                broken.append(f"{label} step {t}: power changes faster than its ramp limit")
        previous_power = power
        soc += h * (battery.charge_efficiency * c - d / battery.discharge_efficiency)
        if not floor <= soc <= ceiling:
            broken.append(f"{label} step {t}: SoC {soc:.0f} Wh outside its bounds")
        if t in targets:
            shortfall += max(0.0, targets[t] - soc)
    wear = battery.wear_cost_per_kwh * (
        battery.charge_efficiency * sum(charge) + sum(discharge) / battery.discharge_efficiency
    )
    wear += battery.cycle_cost_per_kwh * sum(discharge)
    return soc, wear * h / 1000.0, shortfall


def _grid_rules(
    problem: DerProblem,
    imports: list[float],
    exports: list[float],
    curtailed: list[float],
    charges: dict[str, list[float]],
    discharges: dict[str, list[float]],
    loads: dict[str, list[float]],
    thermal: dict[str, list[float]],
    broken: list[str],
) -> None:
    """The rules that tie batteries and loads to the PV surplus."""
    batteries = problem.site.all_batteries
    for t in range(problem.steps):
        surplus = max(0.0, problem.pv_w[t] - problem.load_w[t])
        on_surplus = sum(charges[b.name][t] for b in batteries if not b.grid_charging)
        on_surplus += sum(loads[d.name][t] for d in problem.deferrable_loads if d.surplus_only)
        if on_surplus > surplus - curtailed[t] + POWER_TOLERANCE_W and on_surplus > 0:
            broken.append(f"step {t}: surplus-only users draw more than the PV surplus")
        fenced = [b for b in batteries if not b.grid_discharging]
        if fenced:
            consumed = problem.load_w[t] + sum(p[t] for p in loads.values())
            consumed += sum(p[t] for p in thermal.values())
            consumed += sum(charges[b.name][t] for b in batteries)
            free = sum(discharges[b.name][t] for b in batteries if b.grid_discharging)
            pv_surplus = max(0.0, problem.pv_w[t] - curtailed[t] - consumed)
            if exports[t] > pv_surplus + free + POWER_TOLERANCE_W:
                broken.append(
                    f"step {t}: exports {exports[t]:.0f} W, more than the {pv_surplus:.0f} W PV "
                    "surplus, from a battery barred from feeding the grid"
                )
        if min(imports[t], exports[t]) > POWER_TOLERANCE_W and (
            problem.sell_price_per_kwh[t] >= problem.buy_price_per_kwh[t]
        ):
            broken.append(f"step {t}: imports and exports at once")


def _check_load(
    problem: DerProblem, load: DeferrableLoad, power: list[float], broken: list[str]
) -> int:
    """Check a deferrable load's rules; returns how many times it starts in the horizon."""
    h, label = problem.step_h, f"deferrable load {load.name!r}"
    energy = sum(power) * h
    if energy < load.least_energy_wh - ENERGY_TOLERANCE_WH:
        broken.append(f"{label} gets {energy:.0f} Wh, below the {load.least_energy_wh:g} it needs")
    if energy > load.energy_wh + ENERGY_TOLERANCE_WH:
        broken.append(f"{label} gets {energy:.0f} Wh, above its {load.energy_wh:g}")
    running = [p > POWER_TOLERANCE_W for p in power]
    program = program_of(load, h)
    if program is not None:
        _check_program(load, program, power, broken)
    else:
        for t, p in enumerate(power):
            if running[t] and t not in load.window:
                broken.append(f"{label} runs in step {t}, outside its window")
            if p > load.max_power_w + POWER_TOLERANCE_W:
                broken.append(f"{label} draws {p:.0f} W in step {t}, above its maximum")
            if running[t] and p < load.min_power_w - POWER_TOLERANCE_W:
                broken.append(f"{label} draws {p:.0f} W in step {t}, below its minimum")
    state = load.state
    starts, before, run, off = 0, state.running, state.on_steps, state.off_steps
    for t, on in enumerate(running):
        if on and not before:
            starts += 1
            if off < load.min_off_steps:
                broken.append(f"{label} restarts in step {t} after only {off} steps off")
            run, off = 0, 0
        if not on and before and run < load.min_on_steps and program is None:
            broken.append(f"{label} stops in step {t} after only {run} steps on")
        if on:
            run += 1
        else:
            off = off + 1 if not before else 1
            run = 0
        before = on
    if load.single_block and program is None and starts > (0 if state.running else 1):
        broken.append(f"{label} runs in {starts} blocks, not one")
    if load.max_starts is not None and state.starts_made + starts > load.max_starts:
        broken.append(f"{label} starts {state.starts_made + starts} times, above {load.max_starts}")
    return starts


def _check_program(
    load: DeferrableLoad, program: tuple[float, ...], power: list[float], broken: list[str]
) -> None:
    label = f"deferrable load {load.name!r}"
    steps = len(power)
    if load.state.program_step is not None:
        rest = program[load.state.program_step :]
        expected = list(rest[:steps]) + [0.0] * max(0, steps - len(rest))
        if any(abs(p - e) > POWER_TOLERANCE_W for p, e in zip(power, expected, strict=True)):
            broken.append(f"{label} does not finish the program it is running")
        return
    for start in range(load.start_step, load.end_step - len(program) + 1):
        expected = [0.0] * steps
        expected[start : start + len(program)] = program
        if all(abs(p - e) <= POWER_TOLERANCE_W for p, e in zip(power, expected, strict=True)):
            return
    broken.append(f"{label} does not run its program once, whole, inside its window")
