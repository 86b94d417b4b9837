"""The physics of a thermal load: a 1R1C zone and a COP that follows the outdoor temperature.

The zone's temperature T obeys C·dT/dt = (T_out − T)/R + Q, where Q is the heat put in (gains,
plus the machine's heat: −COP·P when cooling, +COP·P when heating). With the inputs held
constant over a step of h hours the exact solution is

    T[t] = a·T[t−1] + (1 − a)·(T_out[t] + R·Q[t]),    a = exp(−h / (R·C))

which is linear in T and in the electrical power P: the optimiser uses it as a constraint, and
the simulator and the evaluator step the same formula forward. (Forward Euler would drift for
steps near the time constant; this does not.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from meterchain.der.site import ThermalLoad


def cop(load: ThermalLoad, outdoor_c: float) -> float:
    """The coefficient of performance at an outdoor temperature, within the load's bounds."""
    value = load.cop_at_reference + load.cop_change_per_k * (outdoor_c - load.reference_outdoor_c)
    return min(load.cop_max, max(load.cop_min, value))


def cops(load: ThermalLoad) -> tuple[float, ...]:
    return tuple(cop(load, t) for t in load.outdoor_c)


def decay(load: ThermalLoad, step_h: float) -> float:
    """What is left of a temperature difference after one step: exp(−h/(R·C))."""
    return math.exp(-step_h / (load.resistance_k_per_w * load.capacitance_wh_per_k))


def heat_sign(load: ThermalLoad) -> float:
    """+1 when the machine heats the zone, −1 when it cools it."""
    return 1.0 if load.mode == "heat" else -1.0


def next_temperature_c(
    load: ThermalLoad,
    temperature_c: float,
    *,
    outdoor_c: float,
    gain_w: float,
    power_w: float,
    step_h: float,
) -> float:
    """The zone's temperature at the end of a step in which the machine drew `power_w`."""
    a = decay(load, step_h)
    heat_w = gain_w + heat_sign(load) * cop(load, outdoor_c) * power_w
    return a * temperature_c + (1 - a) * (outdoor_c + load.resistance_k_per_w * heat_w)


def temperatures_c(load: ThermalLoad, power_w: Sequence[float], step_h: float) -> list[float]:
    """The zone's temperature at the end of each step under a plan's powers."""
    gains = load.gains_w(len(power_w))
    temperature = load.initial_c
    out = []
    for t, power in enumerate(power_w):
        temperature = next_temperature_c(
            load,
            temperature,
            outdoor_c=load.outdoor_c[t],
            gain_w=gains[t],
            power_w=power,
            step_h=step_h,
        )
        out.append(temperature)
    return out


def power_to_reach_w(
    load: ThermalLoad,
    temperature_c: float,
    target_c: float,
    *,
    outdoor_c: float,
    gain_w: float,
    step_h: float,
) -> float:
    """The constant power that brings the zone to `target_c` by the end of a step, within
    [0, max_power_w]: what an ideal inverter thermostat does."""
    a = decay(load, step_h)
    if a >= 1.0:
        return 0.0
    # target = a·T + (1 − a)·(T_out + R·(gain + s·COP·P))  →  solve for P
    needed_heat_w = ((target_c - a * temperature_c) / (1 - a) - outdoor_c) / (
        load.resistance_k_per_w
    ) - gain_w
    power = needed_heat_w / (heat_sign(load) * cop(load, outdoor_c))
    return min(load.max_power_w, max(0.0, power))


def discomfort_k_h(load: ThermalLoad, temperatures: Sequence[float], step_h: float) -> float:
    """Kelvin·hours outside the comfort band, temperatures taken at the end of each step."""
    total = 0.0
    for t, temperature in enumerate(temperatures):
        low, high = load.comfort_min_c[t], load.comfort_max_c[t]
        total += (max(0.0, low - temperature) + max(0.0, temperature - high)) * step_h
    return total
