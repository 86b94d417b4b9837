"""The houses, days and tariffs the DER benchmarks share (Fortaleza, CE, unless said otherwise).

Everything is computed offline: PV from pvlib's clear-sky model, outdoor temperature from the
bundled normals (meterchain.der.weather), prices from Enel Ceará's tarifa branca as reported by
the regional press in 2019 (see bench_der.py). Randomness is seeded.
"""

from __future__ import annotations

import math
import random
import statistics
from datetime import datetime, timedelta, timezone
from typing import Any

from meterchain.der import Battery, DeferrableLoad, DerProblem, Site, ThermalLoad
from meterchain.der.forecast import clear_sky_pv_w
from meterchain.der.tariffs import TarifaBranca
from meterchain.der.weather import typical_outdoor_c

LATITUDE, LONGITUDE = -3.73, -38.52
LOCAL = timezone(timedelta(hours=-3))  # America/Fortaleza, no daylight saving
DAY = datetime(2026, 11, 24, tzinfo=LOCAL)  # a Tuesday: the weekday tariff applies
STEP_S = 900
STEPS = 96
BRANCA = TarifaBranca(off_peak_per_kwh=0.56, intermediate_per_kwh=0.88, peak_per_kwh=1.44)
FEED_IN_PER_KWH = 0.30

# A household without the AC: about 12 kWh a day with the evening peak of electric showers.
HOUSE_HOURLY_W = [
    450,
    450,
    450,
    450,
    450,
    450,
    350,
    600,
    400,
    300,
    300,
    300,
    500,
    350,
    350,
    350,
    350,
    500,
    900,
    1100,
    900,
    700,
    550,
    500,
]


def pv_w(start: datetime, steps: int, peak_w: float) -> list[float]:
    return list(
        clear_sky_pv_w(
            start,
            latitude=LATITUDE,
            longitude=LONGITUDE,
            peak_power_w=peak_w,
            steps=steps,
            step_s=STEP_S,
        )
    )


def house_w(start: datetime, steps: int) -> list[float]:
    first = int((start - start.replace(hour=0, minute=0)).total_seconds() // STEP_S)
    return [float(HOUSE_HOURLY_W[((first + k) % STEPS) // 4]) for k in range(steps)]


def bedroom_ac(start: datetime, steps: int, room_c: float, outdoor_c: list[float]) -> ThermalLoad:
    """A 12,000 BTU/h inverter split (≈1.2 kW electric) in a Fortaleza bedroom: comfort 24-26 °C
    from 18:00 to 07:00 when people are home, up to 28 °C while they are out."""
    first = int((start - start.replace(hour=0, minute=0)).total_seconds() // STEP_S)
    hours = [((first + k) % STEPS) / 4 for k in range(steps)]
    return ThermalLoad(
        name="ac",
        max_power_w=1_200.0,
        capacitance_wh_per_k=3_000.0,
        resistance_k_per_w=0.01,
        initial_c=room_c,
        outdoor_c=outdoor_c,
        comfort_min_c=[22.0] * steps,
        comfort_max_c=[26.0 if (h >= 18 or h < 7) else 28.0 for h in hours],
        heat_gain_w=[300.0] * steps,
    )


def ev_and_washer(start_step: int = 0) -> list[DeferrableLoad]:
    """An EV charging 7 kWh after 18:00 (1.4-7 kW) and a washing machine's one-hour program
    (heat, wash, spin) between 08:00 and 18:00, counted from the horizon's start."""

    def window(first: int, last: int) -> tuple[int, int]:
        return max(0, first - start_step), max(1, last - start_step)

    ev_from, ev_to = window(72, 96)
    washer_from, washer_to = window(32, 72)
    return [
        DeferrableLoad("ev", 7_000, ev_from, ev_to, 7_000, min_power_w=1_400),
        DeferrableLoad(
            "washer",
            (2_000 + 300 + 300 + 500) * 0.25,
            washer_from,
            washer_to,
            2_000,
            power_profile_w=[2_000.0, 300.0, 300.0, 500.0],
        ),
    ]


def mpc_house(
    first: int,
    *,
    loads: list[DeferrableLoad],
    room_c: float,
    soc: float,
    rng: random.Random,
    pv_day_w: list[float],
    noise: float = 0.1,
) -> DerProblem:
    """The 24-hour horizon that starts `first` quarter hours after midnight, seen through a
    forecast that is a little wrong every time: PV, load and outdoor temperature."""
    start = DAY + timedelta(seconds=first * STEP_S)
    pv = [max(0.0, pv_day_w[first + k] * (1 + noise * rng.uniform(-1, 1))) for k in range(STEPS)]
    load = [w * (1 + noise * rng.uniform(-1, 1)) for w in house_w(start, STEPS)]
    outdoor = [t + rng.uniform(-0.5, 0.5) for t in typical_outdoor_c(start, STEPS, STEP_S)]
    return DerProblem(
        site=Site("house", Battery(10_000, 5_000, 5_000)),
        pv_w=pv,
        load_w=load,
        buy_price_per_kwh=BRANCA.prices(start, STEPS, STEP_S),
        sell_price_per_kwh=[FEED_IN_PER_KWH] * STEPS,
        initial_soc_fraction=soc,
        target_soc_fraction=0.5,
        deferrable_loads=loads,
        thermal_loads=[bedroom_ac(start, STEPS, room_c, outdoor)],
        step_s=STEP_S,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def timing(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "max_ms": round(max(ms), 2),
        "runs": len(ms),
    }


def sine_day_w(peak_w: float, steps: int) -> list[float]:
    """A PV bell from 06:00 to 18:00 (for places whose clear sky is not Fortaleza's)."""
    out = []
    for k in range(steps):
        hour = k * 24 / steps
        out.append(peak_w * max(0.0, math.sin(math.pi * (hour - 6) / 12)) ** 1.3)
    return out
