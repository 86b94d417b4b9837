"""Receding-horizon control: re-plan every interval from the measured state, with one kept model.

Each interval the board measures its state (SoC, room temperature, which loads run and for how
long) and plans the next horizon again; only the plan's first step is acted on. The model of
that horizon has the same structure as the last one (same equipment, same loads, the windows
and the forecasts moved on by a step), so `RecedingHorizon` keeps one HiGHS model and pushes
the new bounds, costs and coefficients into it (formulation.py splits the two), with the last
plan shifted by a step offered as the start of branch and bound. A problem of another shape
(a load added or finished, a battery out of its bounds) builds a new model.

`advance_load` moves a deferrable load on by one interval given what it drew: its window
shifts, its energy shrinks, and a load that runs stays pinned — a started program keeps its
shape, a load inside its minimum on-time stays on, a single block cannot restart.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from meterchain.der.formulation import Formulation
from meterchain.der.milp import FloatArray
from meterchain.der.optimiser import InfeasibleProblem, KeptModel, cost_to_go, plan_with, precheck
from meterchain.der.schedule import DerSchedule
from meterchain.der.site import DeferrableLoad, DerProblem, LoadState

RUNNING_W = 1e-3  # a load drawing more than this in a step ran in it


class RecedingHorizon:
    """Plans successive horizons of one site with one kept HiGHS model (see the module doc)."""

    def __init__(self, *, time_limit_s: float = 5.0, mip_rel_gap: float = 1e-6) -> None:
        self.time_limit_s = time_limit_s
        self.mip_rel_gap = mip_rel_gap
        self.model: KeptModel | None = None
        self.builds = 0
        self.replans = 0

    def plan(self, problem: DerProblem, *, marginal_values: bool = True) -> DerSchedule:
        """The optimal plan for `problem`, re-using the kept model when the shape allows."""
        started = time.perf_counter()
        violations = precheck(problem)
        if violations:
            raise InfeasibleProblem(problem.site.name, violations)
        start: FloatArray | None = None
        if self.model is not None and self.model.fits(problem):
            previous = self.model.last_x
            self.model.load(problem)
            if previous is not None:
                start = shifted(self.model.formulation, previous)
            self.replans += 1
        else:
            self.model = KeptModel(
                problem, time_limit_s=self.time_limit_s, mip_rel_gap=self.mip_rel_gap
            )
            self.builds += 1
        return plan_with(
            self.model,
            problem,
            time_limit_s=self.time_limit_s,
            marginal_values=marginal_values,
            start=start,
            started=started,
        )

    def cost_to_go(self, problem: DerProblem, first_step_net_import_w: float) -> float | None:
        """`optimiser.cost_to_go` on the kept model (which must hold `problem`)."""
        model = self.model if self.model is not None and self.model.fits(problem) else None
        return cost_to_go(
            problem, first_step_net_import_w, time_limit_s=self.time_limit_s, model=model
        )


def shifted(formulation: Formulation, x: FloatArray) -> FloatArray:
    """A solution moved on by one step: each per-step block takes its next step's value, and the
    last step repeats. A start for branch and bound, not a plan: it need not be feasible."""
    out = x.copy()
    blocks = [formulation.imp, formulation.exp, formulation.curt]
    if formulation.grid_mode is not None:
        blocks.append(formulation.grid_mode)
    if formulation.fence is not None:
        blocks.append(formulation.fence)
    for lay in formulation.batteries:
        blocks += [lay.charge, lay.discharge, lay.soc]
        if lay.mode is not None:
            blocks.append(lay.mode)
    for load in formulation.loads:
        blocks.append(load.power)
        for extra in (load.on, load.start, load.program_start):
            if extra is not None:
                blocks.append(extra)
    for thermal in formulation.thermal:
        blocks += [thermal.power, thermal.temperature, thermal.too_cold, thermal.too_warm]
    for block in blocks:
        if len(block) > 1:
            out[block[:-1]] = x[block[1:]]
    return np.asarray(out, dtype=np.float64)


def advance_load(load: DeferrableLoad, drew_w: float, step_h: float) -> DeferrableLoad | None:
    """The load one interval later, after drawing `drew_w` in it; None once it is done.

    The window moves one step closer (a window that has opened stays open from step 0), the
    energy still needed shrinks by what was delivered, and the state records whether it ran.
    """
    delivered_wh = drew_w * step_h
    ran = drew_w > RUNNING_W
    state = load.state
    starts = state.starts_made + (1 if ran and not state.running else 0)
    if ran:
        new_state = LoadState(on_steps=state.on_steps + 1, off_steps=0, starts_made=starts)
    else:
        off = state.off_steps + 1 if not state.running else 1
        new_state = LoadState(on_steps=0, off_steps=off, starts_made=starts)
    program_step = None
    if load.has_program:
        if state.program_step is not None:
            program_step = state.program_step + 1
        elif ran:
            program_step = 1
        if program_step is not None and program_step >= len(load.power_profile_w):
            return None  # the program is over
        new_state = replace(new_state, program_step=program_step)
    energy = max(0.0, load.energy_wh - delivered_wh)
    least = None if load.min_energy_wh is None else max(0.0, load.min_energy_wh - delivered_wh)
    end = load.end_step - 1
    running_on = ran and (
        program_step is not None
        or new_state.on_steps < load.min_on_steps
        or (load.single_block and energy > 1e-9)
    )
    if end <= 0 and not running_on:
        return None
    if energy <= 1e-9 and not load.has_program and not running_on:
        return None
    start = max(0, load.start_step - 1)
    if running_on:
        start = 0
        end = max(end, 1)
    prices = load.price_per_kwh
    if not isinstance(prices, int | float):
        prices = (*tuple(prices)[1:], tuple(prices)[-1])
    return replace(
        load,
        energy_wh=energy,
        min_energy_wh=least,
        start_step=start,
        end_step=end,
        price_per_kwh=prices,
        state=new_state,
    )
