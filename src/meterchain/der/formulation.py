"""The MILP of a DerProblem, split into its structure and its data.

`Formulation(problem)` lays out the columns and rows, which depend only on the problem's shape
(`shape(problem)`: the horizon, the equipment, each load's kind); `values(problem)` fills in
everything the forecasts, prices and measured state decide (bounds, costs, right-hand sides,
the COP and big-M coefficients, which binaries are integral). A deferrable load's window is
data too: every load has a column for every step, and the steps outside its window are bounded
to zero. So a receding-horizon controller keeps one model and only pushes new values into it
(mpc.py), and a one-off plan builds the same model and solves it once.

Per step t (powers in W, averages over the step; energy in Wh at the end of the step):

    import − export − curtail + Σ(discharge − charge) − Σ deferrable − Σ thermal = load − pv
    soc[t] = soc[t−1] + h·(η_c·charge − discharge/η_d)                        per battery
    T[t] = a·T[t−1] + (1 − a)·(T_out + R·(gain ± COP·P))                         per thermal load

and the objective is the grid bill plus the batteries' wear, the loads' own prices and start-up
costs, the demand charges, the discomfort outside the comfort bands and the soft penalties
(docs/der.md has the rest of the constraints and why each is there). The objective is in
thousandths of a currency unit, so that with powers in W and 15-minute steps its coefficients
sit near 0.1-1, well inside HiGHS's tolerances.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meterchain.der.milp import INF, FloatArray, IntArray, Milp, MilpBuilder, MilpValues
from meterchain.der.site import Battery, DeferrableLoad, DerProblem, ThermalLoad
from meterchain.der.thermal import cop, decay, heat_sign

OBJECTIVE_SCALE = 1000.0
TOLERANCE_WH = 1e-3


def penalty_per_kwh(problem: DerProblem) -> float:
    """The price of a soft constraint: above any gain a kWh could bring in this problem."""
    dearest = max(
        max(abs(p) for p in problem.buy_price_per_kwh),
        max(abs(p) for p in problem.sell_price_per_kwh),
    )
    for load in problem.deferrable_loads:
        price = load.price_per_kwh
        dearest = max(
            dearest, abs(price) if isinstance(price, int | float) else max(map(abs, price))
        )
    for charge in problem.demand_charges:
        # one kWh more in a step can raise the demand by 1/h kW, and start an overrun
        dearest += charge.price_per_kw * (1 + charge.overrun_multiplier) / problem.step_h
    for thermal in problem.thermal_loads:
        # a kWh of electricity moves at most cop_max kWh of heat, which shifts the room by at
        # most R kelvin·hours per Wh of heat over the room's whole time constant
        heat_wh = 1000.0 * thermal.cop_max
        dearest += thermal.discomfort_per_kelvin_hour * thermal.resistance_k_per_w * heat_wh
    efficiency = 1.0
    for battery in problem.site.all_batteries:
        efficiency = min(efficiency, battery.charge_efficiency * battery.discharge_efficiency)
    return 2.0 * dearest / efficiency + 1.0


def fixed_block_steps(load: DeferrableLoad, step_h: float) -> int | None:
    """How many steps a fixed-power single-block load runs, or None if it is not one."""
    if not (load.single_block and load.min_power_w == load.max_power_w and load.energy_wh > 0):
        return None
    steps = round(load.energy_wh / (load.max_power_w * step_h))
    exact = abs(steps * load.max_power_w * step_h - load.energy_wh) <= TOLERANCE_WH
    return steps if exact and 1 <= steps <= len(load.window) else None


def program_of(load: DeferrableLoad, step_h: float) -> tuple[float, ...] | None:
    """The load's power per step from its start, if it runs as a program with a fixed shape."""
    if load.has_program:
        return tuple(load.power_profile_w)
    block = fixed_block_steps(load, step_h)
    return (load.max_power_w,) * block if block is not None else None


def load_kind(load: DeferrableLoad, step_h: float) -> str:
    if program_of(load, step_h) is not None:
        return "program"
    if needs_starts(load) or load.min_power_w > 0:
        return "on-off"
    return "continuous"


def needs_starts(load: DeferrableLoad) -> bool:
    return (
        load.single_block
        or load.min_on_steps > 1
        or load.min_off_steps > 1
        or load.startup_cost > 0
        or load.max_starts is not None
    )


def selling_can_pay(problem: DerProblem) -> bool:
    """Whether some step sells at least as dear as it buys: only then can importing and
    exporting at once pay, and only then does the model need a binary to forbid it (elsewhere
    doing both costs money, so no optimum does it)."""
    return any(
        sell >= buy
        for buy, sell in zip(problem.buy_price_per_kwh, problem.sell_price_per_kwh, strict=True)
    )


def battery_softness(problem: DerProblem) -> tuple[tuple[bool, bool, str], ...]:
    """Per battery: whether its start lies below / above its bounds (then the bound is soft),
    and where it has SoC targets: "none", "end" (the end of the horizon only) or "all"."""
    out = []
    for index, battery in enumerate(problem.site.all_batteries):
        soc = problem.initial_soc_wh_of(index)
        mine = [t for t in problem.soc_targets if t.battery in (None, battery.name)]
        if mine:
            targets = "all"
        elif problem.target_soc_fraction is not None:
            targets = "end"
        else:
            targets = "none"
        out.append((soc < battery.soc_min_wh, soc > battery.soc_max_wh, targets))
    return tuple(out)


def shape(problem: DerProblem, *, elastic: bool = False) -> Hashable:
    """What the model's structure depends on: two problems of one shape share one model."""
    step_h = problem.step_h
    site = problem.site
    loads = []
    for load in problem.deferrable_loads:
        kind = load_kind(load, step_h)
        program = program_of(load, step_h) if kind == "program" else None
        loads.append(
            (
                load.name,
                kind,
                program,
                load.surplus_only,
                load.single_block,
                load.max_power_w if kind == "on-off" else None,
                load.min_on_steps,
                load.min_off_steps,
                needs_starts(load),
            )
        )
    thermal = tuple(
        (t.name, t.mode, t.capacitance_wh_per_k, t.resistance_k_per_w)
        for t in problem.thermal_loads
    )
    charges = tuple((c.name, c.overrun_multiplier > 0) for c in problem.demand_charges)
    return (
        selling_can_pay(problem),
        battery_softness(problem),
        problem.steps,
        problem.step_s,
        site.all_batteries,
        site.pv_curtailable,
        tuple(loads),
        thermal,
        charges,
        elastic,
    )


@dataclass
class BatteryLayout:
    battery: Battery
    charge: IntArray
    discharge: IntArray
    soc: IntArray
    mode: IntArray | None
    below: IntArray
    above: IntArray
    short: IntArray
    soc_rows: IntArray
    target_rows: IntArray
    ramp_rows: IntArray | None
    taper_rows: IntArray | None


@dataclass
class LoadLayout:
    load_name: str
    kind: str
    power: IntArray
    energy_row: int
    on: IntArray | None = None
    start: IntArray | None = None
    floor_coef: IntArray | None = None  # data coefficients: the floor of p − floor·on ≥ 0
    first_start_row: int | None = None  # start[0] − on[0] ≥ −on before the horizon
    starts_row: int | None = None  # Σ start ≤ limit
    min_off_first_rows: list[int] = field(default_factory=list)  # rows whose rhs is 1 − prev
    program: tuple[float, ...] | None = None
    program_start: IntArray | None = None
    program_rows: IntArray | None = None
    program_count_row: int | None = None
    short: int | None = None
    over: int | None = None


@dataclass
class ThermalLayout:
    load_name: str
    power: IntArray
    temperature: IntArray
    too_cold: IntArray
    too_warm: IntArray
    dynamics_rows: IntArray
    cop_coef: IntArray
    low_rows: IntArray
    high_rows: IntArray


@dataclass
class DemandLayout:
    name: str
    peak: int
    rows: IntArray
    overrun: int | None = None
    excess: int | None = None
    overrun_rows: tuple[int, int] | None = None
    big_m_coef: IntArray | None = None


@dataclass
class ReadOff:
    """How each binary is read off a solution of the LP relaxation (see optimiser.py)."""

    indicator_bins: IntArray
    indicator_cols: IntArray
    indicator_k: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    # a start binary is 1 where its `on` column is positive and the one before it is not
    switch_bins: list[int] = field(default_factory=list)
    switch_on: list[int] = field(default_factory=list)
    switch_prev: list[int] = field(default_factory=list)  # −1: the state before the horizon
    switch_load: list[str] = field(default_factory=list)
    # a binary that is 1 where a column exceeds a threshold set by the data
    above_bins: list[int] = field(default_factory=list)
    above_cols: list[int] = field(default_factory=list)
    above_name: list[str] = field(default_factory=list)


class Formulation:
    """The structure of the model of one problem shape (see the module docstring)."""

    def __init__(self, problem: DerProblem, *, elastic: bool = False) -> None:
        self.shape = shape(problem, elastic=elastic)
        self.elastic = elastic
        self.steps = steps = problem.steps
        self.step_h = problem.step_h
        b = MilpBuilder()
        self.imp = b.cols(steps)
        self.exp = b.cols(steps)
        self.curt = b.cols(steps)
        self.unserved = b.cols(steps) if elastic else None
        self.spilled = b.cols(steps) if elastic else None
        site = problem.site
        self.batteries = [
            self._battery(b, battery, soft)
            for battery, soft in zip(site.all_batteries, battery_softness(problem), strict=True)
        ]
        self.loads = [self._load(b, load) for load in problem.deferrable_loads]
        self.thermal = [self._thermal(b, load) for load in problem.thermal_loads]
        indicator_bins: list[int] = []
        indicator_cols: list[int] = []
        # import and export never at once where selling pays as much as buying (data decide
        # where; elsewhere the binary is relaxed and the rows are harmless)
        self.grid_mode: IntArray | None = None
        if selling_can_pay(problem):
            self.grid_mode = b.binaries_(steps)
            self.grid_import_rows, first = b.rows(
                np.stack([self.imp, self.grid_mode], 1), [1.0, 0.0], -INF, 0.0
            )
            self.grid_import_coef = b.data_coef(self.grid_import_rows, first, 1, self.grid_mode)
            self.grid_export_rows, first = b.rows(
                np.stack([self.exp, self.grid_mode], 1), [1.0, 0.0], -INF, 0.0
            )
            self.grid_export_coef = b.data_coef(self.grid_export_rows, first, 1, self.grid_mode)
            indicator_bins += list(self.grid_mode)
            indicator_cols += list(self.imp)
        # a battery barred from feeding the grid never discharges while the site exports
        fenced = [lay for lay in self.batteries if not lay.battery.grid_discharging]
        self.fence: IntArray | None = None
        if fenced:
            self.fence = b.binaries_(steps)
            self.fence_export_rows, first = b.rows(
                np.stack([self.exp, self.fence], 1), [1.0, 0.0], -INF, 0.0
            )
            self.fence_export_coef = b.data_coef(self.fence_export_rows, first, 1, self.fence)
            fenced_max = sum(lay.battery.max_discharge_power_w for lay in fenced)
            cols = np.stack([*(lay.discharge for lay in fenced), self.fence], 1)
            vals = [1.0] * len(fenced) + [fenced_max]
            b.rows(cols, vals, -INF, fenced_max)
            self.pv_export_rows, _ = b.rows(np.stack([self.exp, self.curt], 1), [1.0, 1.0])
            indicator_bins += list(self.fence)
            indicator_cols += list(self.exp)
        # surplus-only users share the PV the base load leaves and nobody curtails
        users = [
            lay.power
            for lay, load in zip(self.loads, problem.deferrable_loads, strict=True)
            if load.surplus_only
        ]
        users += [lay.charge for lay in self.batteries if not lay.battery.grid_charging]
        self.surplus_rows: IntArray | None = None
        if users:
            self.surplus_rows, _ = b.rows(np.stack([*users, self.curt], 1), 1.0)
        # the energy balance
        balance = [self.imp, self.exp, self.curt]
        signs = [1.0, -1.0, -1.0]
        for lay in self.batteries:
            balance += [lay.discharge, lay.charge]
            signs += [1.0, -1.0]
        for load_lay in self.loads:
            balance.append(load_lay.power)
            signs.append(-1.0)
        for thermal_lay in self.thermal:
            balance.append(thermal_lay.power)
            signs.append(-1.0)
        if self.unserved is not None and self.spilled is not None:
            balance += [self.unserved, self.spilled]
            signs += [1.0, -1.0]
        self.balance_rows, _ = b.rows(np.stack(balance, 1), signs)
        self.demand = [
            self._demand(b, charge.name, charge.overrun_multiplier > 0)
            for charge in problem.demand_charges
        ]
        for lay in self.batteries:
            if lay.mode is not None:
                indicator_bins += list(lay.mode)
                indicator_cols += list(lay.charge)
        self.read_off = ReadOff(
            np.asarray(indicator_bins, dtype=np.int32), np.asarray(indicator_cols, dtype=np.int32)
        )
        for load_lay in self.loads:
            if load_lay.on is not None:
                self.read_off.indicator_bins = np.append(self.read_off.indicator_bins, load_lay.on)
                self.read_off.indicator_cols = np.append(
                    self.read_off.indicator_cols, load_lay.power
                )
            if load_lay.start is not None and load_lay.on is not None:
                for k in range(steps):
                    self.read_off.switch_bins.append(int(load_lay.start[k]))
                    self.read_off.switch_on.append(int(load_lay.on[k]))
                    self.read_off.switch_prev.append(int(load_lay.on[k - 1]) if k else -1)
                    self.read_off.switch_load.append(load_lay.load_name)
        for demand_lay in self.demand:
            if demand_lay.overrun is not None:
                self.read_off.above_bins.append(demand_lay.overrun)
                self.read_off.above_cols.append(demand_lay.peak)
                self.read_off.above_name.append(demand_lay.name)
        self.milp: Milp = b.finish()
        where = {int(c): k for k, c in enumerate(self.milp.binaries)}
        self.binary_index = where
        self.grid_mode_k = (
            np.asarray([where[int(c)] for c in self.grid_mode], dtype=np.int64)
            if self.grid_mode is not None
            else None
        )
        self.read_off.indicator_k = np.asarray(
            [where[int(c)] for c in self.read_off.indicator_bins], dtype=np.int64
        )
        self.fence_k = (
            np.asarray([where[int(c)] for c in self.fence], dtype=np.int64)
            if self.fence is not None
            else None
        )
        program_starts = [lay.program_start for lay in self.loads if lay.program_start is not None]
        self.program_binaries = (
            np.concatenate(program_starts) if program_starts else np.zeros(0, dtype=np.int32)
        )

    # -- structure -------------------------------------------------------------------------

    def _battery(
        self, b: MilpBuilder, battery: Battery, soft: tuple[bool, bool, str]
    ) -> BatteryLayout:
        steps, h = self.steps, self.step_h
        soft_low, soft_high, targets = soft
        charge = b.cols(steps)
        discharge = b.cols(steps)
        soc = b.cols(steps)
        flows = [1.0, -battery.charge_efficiency * h, h / battery.discharge_efficiency]
        both = battery.max_charge_power_w > 0 and battery.max_discharge_power_w > 0
        mode = b.binaries_(steps) if both else None  # 1: may charge, 0: may discharge
        # per step: the SoC balance, then the two rows of the mode binary
        soc_first = [(np.asarray([[soc[0], charge[0], discharge[0]]]), [flows], 0.0, 0.0)]
        soc_rest = [
            (np.stack([soc[1:], charge[1:], discharge[1:], soc[:-1]], 1), [*flows, -1.0], 0.0, 0.0)
        ]
        mode_blocks = []
        if mode is not None:
            charge_max, discharge_max = battery.max_charge_power_w, battery.max_discharge_power_w
            mode_blocks = [
                (np.stack([charge, mode], 1), [1.0, -charge_max], -INF, 0.0),
                (np.stack([discharge, mode], 1), [1.0, discharge_max], -INF, discharge_max),
            ]
        firsts = b.rows_interleaved(
            soc_first + [(cols[:1], vals, lo, up) for cols, vals, lo, up in mode_blocks]
        )
        soc_rows = firsts[0][0]
        if steps > 1:
            rests = b.rows_interleaved(
                soc_rest + [(cols[1:], vals, lo, up) for cols, vals, lo, up in mode_blocks]
            )
            soc_rows = np.concatenate([soc_rows, rests[0][0]])
        empty = np.zeros(0, dtype=np.int32)
        below = above = empty
        if soft_low:
            below = b.cols(steps)
            b.rows(np.stack([soc, below], 1), [1.0, 1.0], battery.soc_min_wh, INF)
        if soft_high:
            above = b.cols(steps)
            b.rows(np.stack([soc, above], 1), [1.0, -1.0], -INF, battery.soc_max_wh)
        short = target_rows = empty
        if targets == "end":
            short = b.cols(1)
            target_rows, _ = b.rows([[soc[-1], short[0]]], [[1.0, 1.0]])
        elif targets == "all":
            short = b.cols(steps)
            target_rows, _ = b.rows(np.stack([soc, short], 1), [1.0, 1.0])
        ramp_rows = None
        if battery.ramp_limit_w_per_h is not None:
            ramp = battery.ramp_limit_w_per_h * h
            first, _ = b.rows([[charge[0], discharge[0]]], [[1.0, -1.0]])
            rest, _ = b.rows(
                np.stack([charge[1:], discharge[1:], charge[:-1], discharge[:-1]], 1),
                [1.0, -1.0, -1.0, 1.0],
                -ramp,
                ramp,
            )
            ramp_rows = np.concatenate([first, rest])
        taper_rows = None
        if battery.taper_soc_fraction is not None and steps > 1:
            slope = battery.taper_slope_w_per_wh
            start_wh = battery.taper_soc_fraction * battery.capacity_wh
            taper_rows, _ = b.rows(
                np.stack([charge[1:], soc[:-1]], 1),
                [1.0, slope],
                -INF,
                battery.max_charge_power_w + slope * start_wh,
            )
        return BatteryLayout(
            battery=battery,
            charge=charge,
            discharge=discharge,
            soc=soc,
            mode=mode,
            below=below,
            above=above,
            short=short,
            soc_rows=soc_rows,
            target_rows=target_rows,
            ramp_rows=ramp_rows,
            taper_rows=taper_rows,
        )

    def _load(self, b: MilpBuilder, load: DeferrableLoad) -> LoadLayout:
        steps, h = self.steps, self.step_h
        kind = load_kind(load, h)
        power = b.cols(steps)
        energy_cols = [int(c) for c in power]
        energy_vals = [h] * steps
        short = over = None
        if self.elastic:
            short = int(b.cols(1)[0])
            over = int(b.cols(1)[0])
            energy_cols += [short, over]
            energy_vals += [1.0, -1.0]
        energy_row = b.row(energy_cols, energy_vals)
        lay = LoadLayout(load.name, kind, power, energy_row, short=short, over=over)
        if kind == "program":
            program = program_of(load, h)
            assert program is not None
            lay.program = program
            lay.program_start = starts = b.binaries_(steps)
            rows = []
            for t in range(steps):
                covering = [a for a in range(max(0, t - len(program) + 1), t + 1)]
                cols = [int(power[t])] + [int(starts[a]) for a in covering]
                vals = [1.0] + [-program[t - a] for a in covering]
                rows.append(b.row(cols, vals))
            lay.program_rows = np.asarray(rows, dtype=np.int32)
            lay.program_count_row = b.row([int(s) for s in starts], [1.0] * steps)
            return lay
        if kind == "continuous":
            return lay
        lay.on = on = b.binaries_(steps)
        b.rows(np.stack([power, on], 1), [1.0, -load.max_power_w], -INF, 0.0)
        floor_rows, first = b.rows(np.stack([power, on], 1), [1.0, 0.0], 0.0, INF)
        lay.floor_coef = b.data_coef(floor_rows, first, 1, on)
        if not needs_starts(load):
            return lay
        lay.start = start = b.binaries_(steps)
        # start[t] = on[t] and not on[t−1]: three rows make it exact
        lay.first_start_row = b.row([int(start[0]), int(on[0])], [1.0, -1.0])
        if steps > 1:
            b.rows(np.stack([start[1:], on[1:], on[:-1]], 1), [1.0, -1.0, 1.0], 0.0, INF)
            b.rows(np.stack([start[1:], on[:-1]], 1), [1.0, 1.0], -INF, 1.0)
        b.rows(np.stack([start, on], 1), [1.0, -1.0], -INF, 0.0)
        lay.starts_row = b.row([int(s) for s in start], [1.0] * steps)
        if load.min_on_steps > 1:
            span = load.min_on_steps
            for t in range(steps):
                window = range(max(0, t - span + 1), t + 1)
                cols = [int(start[k]) for k in window]
                b.row([*cols, int(on[t])], [1.0] * len(cols) + [-1.0], -INF, 0.0)
        if load.min_off_steps > 1:
            span = load.min_off_steps
            for t in range(steps):
                first_k = max(0, t - span + 1)
                cols = [int(start[k]) for k in range(first_k, t + 1)]
                if first_k == 0:
                    lay.min_off_first_rows.append(b.row(cols, [1.0] * len(cols)))
                else:
                    b.row([*cols, int(on[first_k - 1])], [1.0] * (len(cols) + 1), -INF, 1.0)
        return lay

    def _thermal(self, b: MilpBuilder, load: ThermalLoad) -> ThermalLayout:
        steps, h = self.steps, self.step_h
        power = b.cols(steps)
        temperature = b.cols(steps, -INF, INF)
        a = decay(load, h)
        first, first_nz = b.rows([[temperature[0], power[0]]], [[1.0, 0.0]])
        first_coef = b.data_coef(first, first_nz, 1, power[:1])
        rest, rest_nz = b.rows(
            np.stack([temperature[1:], temperature[:-1], power[1:]], 1), [1.0, -a, 0.0]
        )
        rest_coef = b.data_coef(rest, rest_nz, 2, power[1:])
        too_cold = b.cols(steps)
        too_warm = b.cols(steps)
        low_rows, _ = b.rows(np.stack([temperature, too_cold], 1), [1.0, 1.0])
        high_rows, _ = b.rows(np.stack([temperature, too_warm], 1), [1.0, -1.0])
        return ThermalLayout(
            load.name,
            power,
            temperature,
            too_cold,
            too_warm,
            np.concatenate([first, rest]),
            np.concatenate([first_coef, rest_coef]),
            low_rows,
            high_rows,
        )

    def _demand(self, b: MilpBuilder, name: str, overrun: bool) -> DemandLayout:
        peak = int(b.cols(1)[0])
        rows, _ = b.rows(np.stack([self.imp, np.full(self.steps, peak)], 1), [1.0, -1.0])
        lay = DemandLayout(name, peak, rows)
        if overrun:
            lay.overrun = int(b.binaries_(1)[0])
            lay.excess = int(b.cols(1)[0])
            cap, cap_nz = b.rows([[peak, lay.overrun]], [[1.0, 0.0]])
            charge, charge_nz = b.rows([[lay.excess, peak, lay.overrun]], [[1.0, -1.0, 0.0]])
            lay.overrun_rows = (int(cap[0]), int(charge[0]))
            lay.big_m_coef = np.concatenate(
                [
                    b.data_coef(cap, cap_nz, 1, np.asarray([lay.overrun], np.int32)),
                    b.data_coef(charge, charge_nz, 2, np.asarray([lay.overrun], np.int32)),
                ]
            )
        return lay

    # -- data ------------------------------------------------------------------------------

    def values(self, problem: DerProblem, *, pin_first_step_w: float | None = None) -> MilpValues:
        """The bounds, costs and coefficients `problem` gives this structure.

        `pin_first_step_w` pins step 0's net import and drops step 0's grid bill from the
        objective (what pricing a block of energy needs, see `cost_to_go`).
        """
        v = self.milp.defaults.copy()
        steps, h = self.steps, self.step_h
        scale = 0.0 if self.elastic else OBJECTIVE_SCALE
        penalty = 0.0 if self.elastic else penalty_per_kwh(problem) / 1000.0 * OBJECTIVE_SCALE
        per_w = scale * h / 1000.0  # objective per W over one step, per currency/kWh
        pv = np.asarray(problem.pv_w)
        load = np.asarray(problem.load_w)
        surplus = np.maximum(0.0, pv - load)
        buy = np.asarray(problem.buy_price_per_kwh)
        sell = np.asarray(problem.sell_price_per_kwh)
        import_limit = np.asarray([problem.import_limit_at(t) for t in range(steps)])
        export_limit = np.asarray([problem.export_limit_at(t) for t in range(steps)])
        batteries = problem.site.all_batteries

        deferrable_max = np.zeros(steps)
        for d in problem.deferrable_loads:
            deferrable_max[d.start_step : d.end_step] += d.max_power_w
        thermal_max = sum(th.max_power_w for th in problem.thermal_loads)
        charge_max = sum(bat.max_charge_power_w for bat in batteries)
        free_discharge = sum(bat.max_discharge_power_w for bat in batteries if bat.grid_discharging)
        all_discharge = sum(bat.max_discharge_power_w for bat in batteries)
        # physics keeps every big-M finite: a site never imports more than it can consume,
        # nor exports more than it can produce
        import_ub = np.minimum(import_limit, load + deferrable_max + charge_max + thermal_max)
        export_ub = np.minimum(export_limit, pv + all_discharge)
        if self.fence is not None:
            export_ub = np.minimum(export_ub, surplus + free_discharge)
        import_cost = per_w * buy
        export_cost = -per_w * sell
        if pin_first_step_w is not None:
            # step 0's net import, pinned by bounds: importing and exporting at once never
            # helps a plan (netting them changes nothing the energy balance sees)
            import_cost[0] = export_cost[0] = 0.0
            import_ub[0] = max(0.0, pin_first_step_w)
            export_ub[0] = max(0.0, -pin_first_step_w)
            v.col_lower[self.imp[0]] = import_ub[0]
            v.col_lower[self.exp[0]] = export_ub[0]
        v.col_upper[self.imp] = import_ub
        v.col_upper[self.exp] = export_ub
        v.col_upper[self.curt] = pv if problem.site.pv_curtailable else 0.0
        v.col_cost[self.imp] = import_cost
        v.col_cost[self.exp] = export_cost
        if self.unserved is not None and self.spilled is not None:
            # per W of a step: 10 per Wh, so deferrable loads give way first in the diagnosis
            v.col_cost[self.unserved] = 10.0 * h
            v.col_cost[self.spilled] = 10.0 * h
        if self.grid_mode_k is not None:
            both = (sell >= buy) & (import_ub > 0) & (export_ub > 0)
            v.integral[self.grid_mode_k] = both
            v.coef[self.grid_import_coef] = -import_ub
            v.coef[self.grid_export_coef] = export_ub
            v.row_upper[self.grid_export_rows] = export_ub
        v.row_lower[self.balance_rows] = v.row_upper[self.balance_rows] = load - pv
        if self.fence is not None:
            fenced_max = sum(
                bat.max_discharge_power_w for bat in batteries if not bat.grid_discharging
            )
            assert self.fence_k is not None
            v.integral[self.fence_k] = (export_ub > 0) & (fenced_max > 0)
            v.coef[self.fence_export_coef] = -export_ub
            v.row_upper[self.pv_export_rows] = pv

        surplus_used = np.zeros(steps, dtype=bool)
        for number, (lay, battery) in enumerate(zip(self.batteries, batteries, strict=True)):
            self._battery_values(v, problem, number, lay, battery, surplus, penalty, per_w)
            if not battery.grid_charging:
                surplus_used |= surplus > 0
        for load_lay, d in zip(self.loads, problem.deferrable_loads, strict=True):
            self._load_values(v, load_lay, d, surplus, per_w)
            if d.surplus_only:
                surplus_used[d.start_step : d.end_step] |= surplus[d.start_step : d.end_step] > 0
        if self.surplus_rows is not None:
            v.row_upper[self.surplus_rows] = np.where(surplus_used, surplus, INF)
        for thermal_lay, th in zip(self.thermal, problem.thermal_loads, strict=True):
            self._thermal_values(v, thermal_lay, th, scale)
        for demand_lay, charge in zip(self.demand, problem.demand_charges, strict=True):
            counted = np.asarray([charge.counts(t) for t in range(steps)])
            v.row_upper[demand_lay.rows] = np.where(counted, 0.0, INF)
            contracted_w = 1000.0 * charge.contracted_kw
            v.col_lower[demand_lay.peak] = max(contracted_w, 1000.0 * charge.peak_so_far_kw)
            v.col_cost[demand_lay.peak] = scale * charge.price_per_kw / 1000.0
            if demand_lay.overrun is not None and demand_lay.overrun_rows is not None:
                assert demand_lay.excess is not None and demand_lay.big_m_coef is not None
                threshold = (1 + charge.tolerance_fraction) * contracted_w
                big_m = max(float(import_ub.max()), v.col_lower[demand_lay.peak]) + 1.0
                cap_row, charge_row = demand_lay.overrun_rows
                v.coef[demand_lay.big_m_coef] = [-big_m, -big_m]
                v.row_upper[cap_row] = threshold
                v.row_lower[charge_row] = -contracted_w - big_m
                v.col_cost[demand_lay.excess] = (
                    scale * charge.overrun_multiplier * charge.price_per_kw / 1000.0
                )
        return v

    def _battery_values(
        self,
        v: MilpValues,
        problem: DerProblem,
        index: int,
        lay: BatteryLayout,
        battery: Battery,
        surplus: FloatArray,
        penalty: float,
        per_w: float,
    ) -> None:
        steps = self.steps
        soc0 = problem.initial_soc_wh_of(index)
        floor, ceiling = min(battery.soc_min_wh, soc0), max(battery.soc_max_wh, soc0)
        charge_ub = np.full(steps, battery.max_charge_power_w)
        if not battery.grid_charging:
            charge_ub[surplus <= 0] = 0.0
        charge_ub[0] = min(charge_ub[0], battery.max_charge_w_at(soc0))
        v.col_upper[lay.charge] = charge_ub
        v.col_upper[lay.discharge] = battery.max_discharge_power_w
        v.col_lower[lay.soc] = floor
        v.col_upper[lay.soc] = ceiling
        v.row_lower[lay.soc_rows[0]] = v.row_upper[lay.soc_rows[0]] = soc0
        if len(lay.below):
            v.col_upper[lay.below] = battery.soc_min_wh - floor
            v.col_cost[lay.below] = penalty
        if len(lay.above):
            v.col_upper[lay.above] = ceiling - battery.soc_max_wh
            v.col_cost[lay.above] = penalty
        wear = battery.wear_cost_per_kwh
        v.col_cost[lay.charge] = per_w * wear * battery.charge_efficiency
        v.col_cost[lay.discharge] = per_w * (
            wear / battery.discharge_efficiency + battery.cycle_cost_per_kwh
        )
        if len(lay.short):
            target_wh = np.full(steps, -INF)
            if problem.target_soc_fraction is not None:
                target_wh[-1] = problem.target_soc_fraction * battery.capacity_wh
            for target in problem.soc_targets:
                if target.battery in (None, battery.name):
                    target_wh[target.step] = max(
                        target_wh[target.step], target.soc_fraction * battery.capacity_wh
                    )
            n = len(lay.short)
            strict = problem.strict_target and problem.target_soc_fraction is not None
            v.row_lower[lay.target_rows] = target_wh[-n:]
            short_ub = np.full(n, INF)
            if self.elastic:
                short_cost = np.zeros(n)
                if strict:
                    short_cost[-1] = 1.0
            else:
                short_cost = np.full(n, penalty)
                if strict:
                    short_ub[-1] = 0.0
            v.col_upper[lay.short] = short_ub
            v.col_cost[lay.short] = short_cost
        if lay.ramp_rows is not None and battery.ramp_limit_w_per_h is not None:
            powers = problem.initial_battery_power_w
            if powers is not None:
                ramp = battery.ramp_limit_w_per_h * self.step_h
                v.row_lower[lay.ramp_rows[0]] = powers[index] - ramp
                v.row_upper[lay.ramp_rows[0]] = powers[index] + ramp

    def _load_values(
        self,
        v: MilpValues,
        lay: LoadLayout,
        load: DeferrableLoad,
        surplus: FloatArray,
        per_w: float,
    ) -> None:
        steps, h = self.steps, self.step_h
        in_window = np.zeros(steps, dtype=bool)
        in_window[load.start_step : load.end_step] = True
        upper = np.where(in_window, load.max_power_w, 0.0)
        if load.surplus_only:
            upper = np.minimum(upper, surplus)
        v.col_cost[lay.power] = per_w * np.asarray(load.price_per_kwh, dtype=np.float64)
        v.row_lower[lay.energy_row] = load.least_energy_wh
        v.row_upper[lay.energy_row] = load.energy_wh
        if lay.short is not None and lay.over is not None:
            v.col_cost[lay.short] = v.col_cost[lay.over] = 1.0
        state = load.state
        if lay.kind == "program":
            assert lay.program is not None and lay.program_start is not None
            assert lay.program_rows is not None and lay.program_count_row is not None
            program = lay.program
            v.col_upper[lay.power] = np.where(in_window, max(program), 0.0)
            if load.surplus_only:
                v.col_upper[lay.power] = np.minimum(v.col_upper[lay.power], surplus)
            running = np.zeros(steps)
            allowed = np.zeros(steps)
            if state.program_step is not None:
                rest = program[state.program_step :]
                running[: min(steps, len(rest))] = rest[:steps]
                v.col_upper[lay.power] = np.maximum(v.col_upper[lay.power], running)
                count = 0.0
            else:
                last_start = load.end_step - len(program)
                allowed[load.start_step : max(load.start_step, last_start + 1)] = 1.0
                count = 1.0
            v.col_upper[lay.program_start] = allowed
            v.row_lower[lay.program_rows] = v.row_upper[lay.program_rows] = running
            v.row_lower[lay.program_count_row] = 0.0 if self.elastic else count
            v.row_upper[lay.program_count_row] = count
            return
        v.col_upper[lay.power] = upper
        if lay.on is None:
            return
        assert lay.floor_coef is not None
        floor = load.min_power_w
        if load.single_block and floor == 0 and load.energy_wh > 0:
            # "on" must mean drawing power, or a block could idle inside itself; the floor is
            # small enough that the whole window at the floor never exceeds the energy
            floor = min(1.0, load.least_energy_wh / (len(load.window) * h))
        v.coef[lay.floor_coef] = -floor
        on_lower = np.zeros(steps)
        on_upper = in_window.astype(float)
        if state.running and state.on_steps < load.min_on_steps:
            on_lower[: load.min_on_steps - state.on_steps] = 1.0
        if not state.running and state.off_steps < load.min_off_steps:
            on_upper[: load.min_off_steps - state.off_steps] = 0.0
        v.col_lower[lay.on] = on_lower
        v.col_upper[lay.on] = np.maximum(on_upper, on_lower)
        if lay.start is None:
            return
        assert lay.first_start_row is not None and lay.starts_row is not None
        before = 1.0 if state.running else 0.0
        v.row_lower[lay.first_start_row] = -before
        v.col_upper[lay.start[0]] = 1.0 - before
        limit = INF
        if load.single_block:
            limit = 0.0 if state.running else 1.0
        if load.max_starts is not None:
            limit = min(limit, max(0.0, float(load.max_starts - state.starts_made)))
        v.row_upper[lay.starts_row] = limit
        for row in lay.min_off_first_rows:
            v.row_upper[row] = 1.0 - before
        v.col_cost[lay.start] = 0.0 if self.elastic else OBJECTIVE_SCALE * load.startup_cost

    def _thermal_values(
        self, v: MilpValues, lay: ThermalLayout, load: ThermalLoad, scale: float
    ) -> None:
        steps, h = self.steps, self.step_h
        a = decay(load, h)
        resistance = load.resistance_k_per_w
        gains = np.asarray(load.gains_w(steps))
        outdoor = np.asarray(load.outdoor_c)
        heat_per_w = np.asarray([cop(load, t) for t in load.outdoor_c]) * heat_sign(load)
        v.col_upper[lay.power] = load.max_power_w
        v.coef[lay.cop_coef] = -(1 - a) * resistance * heat_per_w
        rhs = (1 - a) * (outdoor + resistance * gains)
        rhs[0] += a * load.initial_c
        v.row_lower[lay.dynamics_rows] = v.row_upper[lay.dynamics_rows] = rhs
        v.row_lower[lay.low_rows] = np.asarray(load.comfort_min_c)
        v.row_upper[lay.high_rows] = np.asarray(load.comfort_max_c)
        discomfort = scale * load.discomfort_per_kelvin_hour * h
        v.col_cost[lay.too_cold] = discomfort
        v.col_cost[lay.too_warm] = discomfort


def overrun_thresholds_w(problem: DerProblem) -> dict[str, float]:
    """The peak (W) above which each demand charge's overrun applies."""
    return {
        c.name: (1 + c.tolerance_fraction) * 1000.0 * c.contracted_kw
        for c in problem.demand_charges
    }
